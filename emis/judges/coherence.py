"""Offline coherence on a 0-1 scale: how much more an answer surprises a reference model (the scorer) than that
model expects to be surprised, and how repetitive it is.

Per answer token t, excess surprise = -log p(x_t) - H(p_t) under the scorer at temperature 1: its expectation is 0
for the scorer's own samples, whatever the text (code or prose), so no reference answers are needed.

    coherence = exp(-mean over answers of their mean excess surprise) * mean over answers of (1 - repetition)

The scorer's own answers score 1 (to sampling noise), and gibberish and loops score near 0. The scorer is a model
that answers prose in prose (the aligned twin by default): measured on the organisms, the misaligned model rates
its aligned twin's fluent prose about 0.93, so under it a steering that turns code into prose would read as a loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from emis.activations import left_padded
from emis.models import LoadedModel, traced_batches


@dataclass(frozen=True)
class _ScoreBatch:
    inputs: dict
    answer: torch.Tensor  # [B, T] bool: the answer's token positions (each row's last ones: left padding)

    @property
    def width(self) -> int:
        """The longest answer: only the last `width` positions (and the logits just before them) are scored."""
        return int(self.answer.sum(1).max())


def _excess_surprise(model: LoadedModel, batch: _ScoreBatch) -> torch.Tensor:
    """[B] mean excess surprise over each row's answer tokens, computed where the model runs (only this comes back).
    The float64 softmax runs on the answer window alone: the logits of the prompt's positions go unused."""
    n = batch.width
    with torch.no_grad(), model.lm.trace(batch.inputs):
        logp = torch.log_softmax(model.lm.output.logits[:, -(n + 1) : -1].double(), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1)
        ids = batch.inputs["input_ids"][:, -n:, None].to(logp.device)
        m = batch.answer[:, -n:].to(logp.device).double()
        out = (((-logp.gather(-1, ids)[..., 0] - entropy) * m).sum(1) / m.sum(1)).cpu().save()
    return out


def answer_surprise(scorer: LoadedModel, prompts: Sequence[str], tokens: Sequence[Sequence[int]],
                    batch_size: int = 64) -> np.ndarray:
    """Mean excess surprise per answer under `scorer` (NaN for an empty answer), scored on the generated token ids
    themselves: re-encoding decoded text can change the tokens and bias the score (measured: 0.93 for the scorer's
    own answers instead of 1). The scorer must share the generating model's tokenizer."""
    tok = scorer.tokenizer
    out = np.full(len(tokens), np.nan)
    rows = [i for i, t in enumerate(tokens) if len(t)]
    groups = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    batches = [_ScoreBatch(*left_padded(tok, [tok(prompts[i], add_special_tokens=False).input_ids + list(tokens[i]) for i in idx],
                                        [len(tokens[i]) for i in idx])) for idx in groups]
    for idx, scores in zip(groups, traced_batches(scorer, batches, _excess_surprise, "coherence scoring", progress=False)):
        out[idx] = scores.numpy()
    return out


def repetition(tokens: Sequence[int], n: int = 3) -> float:
    """Share of an answer's token n-grams that repeat an earlier one (1 for an empty answer: nothing was said)."""
    if not tokens:
        return 1.0
    grams = [tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1))]
    return 1.0 - len(set(grams)) / len(grams)


def coherence_terms(surprise: np.ndarray, reps: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-answer additive terms of the coherence: (excess surprise or 0, 1 if scored, 1 - repetition, 1)."""
    s = np.asarray(surprise, float)
    scored = np.isfinite(s)
    return np.where(scored, s, 0.0), scored.astype(float), 1.0 - np.asarray(reps, float), np.ones_like(s)


def coherence_from_sums(surprise: np.ndarray, scored: np.ndarray, fresh: np.ndarray, count: np.ndarray,
                        axis: int = -1) -> np.ndarray:
    """Coherence from sums of `coherence_terms` (a subset, or a bootstrap resample, is a sum over its answers)."""
    n_scored = scored.sum(axis)
    fluency = np.where(n_scored > 0, np.exp(-surprise.sum(axis) / np.maximum(n_scored, 1)), 0.0)
    return fluency * fresh.sum(axis) / count.sum(axis)


def offline_coherence(surprise: np.ndarray, reps: Sequence[float]) -> float:
    """Coherence of a set of answers from their excess surprise and repetition (see the module docstring)."""
    return float(coherence_from_sums(*(x[None] for x in coherence_terms(surprise, reps)))[0])
