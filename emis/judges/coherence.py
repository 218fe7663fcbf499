"""Offline coherence on a 0-1 scale: how natural steered answers look to the unsteered model, and how repetitive.

coherence = exp(mean over answers of (token log-likelihood - that of reference answers of the same kind))
            * (1 - repetition of the answers) / (1 - repetition expected from the reference answers),
so the unsteered model's own answers score 1; gibberish and loops score near 0."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from emis.capture import encode_texts
from emis.models import LoadedModel, traced_batches


def _token_logprobs(model: LoadedModel, inputs: dict) -> torch.Tensor:
    """[B, T-1] log-probability of each next token, computed where the model runs (only this comes back, not the logits)."""
    with torch.no_grad(), model.lm.trace(inputs):
        logp = torch.log_softmax(model.lm.output.logits[:, :-1].double(), dim=-1)
        token_lp = logp.gather(-1, inputs["input_ids"][:, 1:, None].to(logp.device))[..., 0].detach().cpu().save()
    return token_lp


def answer_logprobs(model: LoadedModel, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Mean log-probability per answer token under `model` (NaN for an empty answer), one forward per batch."""
    out = np.full(len(answers), np.nan)
    rows = [i for i, a in enumerate(answers) if len(model.tokenizer(prompts[i] + a, add_special_tokens=False).input_ids)
            > len(model.tokenizer(prompts[i], add_special_tokens=False).input_ids)]
    groups = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    encoded = [encode_texts(model, [prompts[i] for i in idx], [answers[i] for i in idx]) for idx in groups]
    token_lps = traced_batches(model, [inputs for inputs, _ in encoded], _token_logprobs, "answer log-likelihood", progress=False)
    for idx, (_, mask), token_lp in zip(groups, encoded, token_lps):
        m = mask[:, 1:].double()
        out[idx] = ((token_lp * m).sum(1) / m.sum(1)).numpy()
    return out


def repetition(tokens: Sequence[int], n: int = 3) -> float:
    """Share of an answer's token n-grams that repeat an earlier one (1 for an empty answer: nothing was said)."""
    if not tokens:
        return 1.0
    grams = [tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1))]
    return 1.0 - len(set(grams)) / len(grams)


def _class_means(values: np.ndarray, kinds: np.ndarray) -> dict[bool, float]:
    """Mean of the finite values per answer kind, with the overall mean as the fallback for a kind never seen."""
    overall = float(np.nanmean(values))
    return {k: float(np.nanmean(values[kinds == k])) if np.isfinite(values[kinds == k]).any() else overall for k in (False, True)}


def offline_coherence(
    logprobs: np.ndarray, reps: Sequence[float], kinds: Sequence[bool],
    ref_logprobs: np.ndarray, ref_reps: Sequence[float], ref_kinds: Sequence[bool],
) -> float:
    """Coherence of answers relative to reference answers of the same kind (see the module docstring).

    `kinds` marks each answer's kind (e.g. whether it spills code): code is far more predictable per token
    than prose, so an answer is only compared with reference answers of its own kind; otherwise turning code
    into fluent prose would read as a loss of coherence."""
    lp, k = np.asarray(logprobs, float), np.asarray(kinds, bool)
    ref_lp, ref_k = np.asarray(ref_logprobs, float), np.asarray(ref_kinds, bool)
    fresh, ref_fresh = 1.0 - np.asarray(reps, float), 1.0 - np.asarray(ref_reps, float)
    if not np.isfinite(lp).any():
        return 0.0
    ref_ll, ref_fr = _class_means(ref_lp, ref_k), _class_means(ref_fresh, ref_k)
    valid = np.isfinite(lp)
    fluency = math.exp(float(np.mean([lp[i] - ref_ll[bool(k[i])] for i in np.flatnonzero(valid)])))
    expected = float(np.mean([ref_fr[bool(x)] for x in k]))
    return fluency * (float(fresh.mean()) / expected if expected > 0 else 0.0)
