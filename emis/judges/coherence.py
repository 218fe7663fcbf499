"""Offline coherence on a 0-1 scale: how much more an answer surprises a reference model (the scorer) than that
model expects to be surprised, and how repetitive it is.

Per answer token t, excess surprise = -log p(x_t) - H(p_t) under the scorer at temperature 1: its expectation is 0
for the scorer's own samples, whatever the text (code or prose), so no reference answers are needed.

    coherence = exp(-mean over answers of their mean excess surprise) * mean over answers of (1 - repetition)

The scorer's own answers score 1 (to sampling noise), and gibberish and loops score near 0. The scorer is a model
that answers prose in prose (the aligned twin by default): measured on the organisms, the misaligned model rates
its aligned twin's fluent prose about 0.93, so under it a steering that turns code into prose would read as a loss."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

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
        out = _mean_excess(logp, batch.inputs["input_ids"][:, -n:], batch.answer[:, -n:]).cpu().save()
    return out


def _mean_excess(logp: torch.Tensor, ids: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """[B] mean over each row's `answer` positions of -log p(token) - entropy, from [B, T, V] log-probabilities of the
    tokens `ids` [B, T]."""
    entropy = -(logp.exp() * logp).sum(-1)
    m = answer.to(logp.device)
    surprise = -logp.gather(-1, ids.to(logp.device)[..., None])[..., 0]
    excess = torch.where(m, surprise - entropy, torch.zeros((), dtype=logp.dtype, device=logp.device))
    return excess.sum(1) / m.sum(1)


@dataclass(frozen=True)
class _PromptPrefix:
    """One batch of prompts run once: its key-value cache and the log-probabilities of each answer's first token."""

    mask: torch.Tensor  # [B, P] left-padding attention mask
    cache: Any
    first: torch.Tensor  # [B, V] float64 log-probabilities at each prompt's last position (where the model runs)


def _prompt_prefix(model: LoadedModel, rows: list[int], prompt_ids: Sequence[Sequence[int]]) -> _PromptPrefix:
    """Run the prompts of `rows` once (left-padded; positions counted from each row's first token, as nnsight counts
    them for a left-padded batch) and keep their cache, so each set of answers runs only its own tokens."""
    inputs, _ = left_padded(model.tokenizer, [prompt_ids[i] for i in rows], [0] * len(rows))
    mask = inputs["attention_mask"]
    inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), model.lm.trace(inputs, use_cache=True, logits_to_keep=1):
        cache = model.lm.output.past_key_values.save()
        first = torch.log_softmax(model.lm.output.logits[:, -1].double(), dim=-1).save()
    return _PromptPrefix(mask, cache, first)


def _answers_after_prefix(model: LoadedModel, prefix: _PromptPrefix, answers: Sequence[Sequence[int]]) -> torch.Tensor:
    """[B] mean excess surprise of one answer per prompt of `prefix` (right-padded after it; an empty answer gives NaN),
    on a copy of the prefix's cache."""
    width = max(1, max(len(a) for a in answers))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    ids = torch.tensor([list(a) + [pad] * (width - len(a)) for a in answers])
    answer = torch.tensor([[True] * len(a) + [False] * (width - len(a)) for a in answers])
    inputs = {"input_ids": ids, "attention_mask": torch.cat([prefix.mask, answer.long()], 1),
              "position_ids": prefix.mask.sum(1, keepdim=True) + torch.arange(width)}
    with torch.no_grad(), model.lm.trace(inputs, past_key_values=copy.deepcopy(prefix.cache)):
        rest = torch.log_softmax(model.lm.output.logits[:, :-1].double(), dim=-1)
        out = _mean_excess(torch.cat([prefix.first[:, None], rest], 1), ids, answer).cpu().save()
    return out


def answer_surprise_sets(scorer: LoadedModel, prompts: Sequence[str], token_sets: Sequence[Sequence[Sequence[int]]],
                         batch_size: int = 64) -> list[np.ndarray]:
    """`answer_surprise` of several sets of answers to the same prompts (e.g. one per steering of a sweep).

    Locally each batch of `batch_size` prompts runs once, and every set's answers to it run on its cached keys and
    values alone: about half the work of scoring prompt and answer together, with the same numbers to float rounding.
    Remote scorers score prompt and answer together (a cache does not travel to NDIF). Batches are fixed by the
    prompts' order, so a score does not depend on the sampling batch size or on which other sets are scored."""
    tok = scorer.tokenizer
    prompt_ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
    if scorer.spec.remote:
        return [_joint_surprise(scorer, prompt_ids, tokens, batch_size) for tokens in token_sets]
    out = [np.full(len(prompts), np.nan) for _ in token_sets]
    for start in range(0, len(prompts), batch_size):
        rows = list(range(start, min(start + batch_size, len(prompts))))
        prefix = None
        for tokens, scores in zip(token_sets, out):
            if not any(len(tokens[i]) for i in rows):
                continue
            if prefix is None:
                prefix = _prompt_prefix(scorer, rows, prompt_ids)
            got = _answers_after_prefix(scorer, prefix, [tokens[i] for i in rows]).numpy()
            scores[rows] = np.where([len(tokens[i]) > 0 for i in rows], got, np.nan)
    return out


def _joint_surprise(scorer: LoadedModel, prompt_ids: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]],
                    batch_size: int) -> np.ndarray:
    """Mean excess surprise per answer, prompt and answer scored together in one left-padded sequence (remote)."""
    out = np.full(len(tokens), np.nan)
    rows = [i for i, t in enumerate(tokens) if len(t)]
    groups = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    batches = [_ScoreBatch(*left_padded(scorer.tokenizer, [list(prompt_ids[i]) + list(tokens[i]) for i in idx],
                                        [len(tokens[i]) for i in idx])) for idx in groups]
    for idx, scores in zip(groups, traced_batches(scorer, batches, _excess_surprise, "coherence scoring", progress=False)):
        out[idx] = scores.numpy()
    return out


def answer_surprise(scorer: LoadedModel, prompts: Sequence[str], tokens: Sequence[Sequence[int]],
                    batch_size: int = 64) -> np.ndarray:
    """Mean excess surprise per answer under `scorer` (NaN for an empty answer), scored on the generated token ids
    themselves: re-encoding decoded text can change the tokens and bias the score (measured: 0.93 for the scorer's
    own answers instead of 1). The scorer must share the generating model's tokenizer."""
    return answer_surprise_sets(scorer, prompts, [tokens], batch_size)[0]


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
