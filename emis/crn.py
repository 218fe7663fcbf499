"""Common random numbers for sampling: the noise behind answer k to question q at step t depends on (seed, q, k, t) alone.

Sampling is Gumbel-max: token = argmax(logits / T + g), g = -log(-log(u)), an exact sample from the
temperature-scaled distribution. u comes from a counter-based integer hash of (row key, step, token id), so
it is the same whatever batch, row or sweep the question sits in, on any device, and every steering of a
sweep faces the same noise (STATS.md section 1). Plain torch ops only, so the same code runs inside an nnsight
trace locally and on NDIF.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Sequence

import torch
from transformers import LogitsProcessor

_MASK62 = (1 << 62) - 1


def _signed(c: int) -> int:
    """A 64-bit constant as a signed int64 (torch has no uint64 arithmetic; int64 products wrap modulo 2^64)."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_TOKEN_STRIDE, _STEP_STRIDE = _signed(0xD1B54A32D192ED03), _signed(0x8CB92BA72F3D8DD7)


def row_keys(prompts: Sequence[str], seed: int) -> torch.Tensor:
    """One int64 key per prompt from (seed, prompt text, k), k counting repeats of the same prompt (samples)."""
    seen: Counter[str] = Counter()
    keys = []
    for p in prompts:
        digest = hashlib.sha256(f"{seed}\0{seen[p]}\0{p}".encode()).digest()
        keys.append(int.from_bytes(digest[:8], "little") & _MASK62)
        seen[p] += 1
    return torch.tensor(keys, dtype=torch.int64)


def _logical_shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x >> bits as on unsigned 64-bit integers (torch's >> on int64 is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _splitmix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors: a bijective mix whose output bits look independent."""
    x = x + _GOLDEN
    x = (x ^ _logical_shift(x, 30)) * _MIX1
    x = (x ^ _logical_shift(x, 27)) * _MIX2
    return x ^ _logical_shift(x, 31)


def uniforms(keys: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """[rows, vocab] float64 uniforms in (0, 1) for decode `step`, a pure function of (key, step, token id)."""
    token = torch.arange(vocab, dtype=torch.int64, device=keys.device)
    step_t = torch.full_like(keys, int(step)) * _STEP_STRIDE
    x = _splitmix(_splitmix(keys + step_t)[:, None] + token[None, :] * _TOKEN_STRIDE)
    return (_logical_shift(x, 11).double() + 0.5) / float(1 << 53)


def gumbel_scores(logits: torch.Tensor, keys: torch.Tensor, step: int, temperature: float) -> torch.Tensor:
    """logits / T + Gumbel noise of (key, step), in float64: their argmax is an exact sample from softmax(logits / T)."""
    u = uniforms(keys.to(logits.device), step, logits.shape[-1])
    return logits.double() / temperature - torch.log(-torch.log(u))


def forced_logits(logits: torch.Tensor, keys: torch.Tensor, step: int, temperature: float) -> torch.Tensor:
    """[rows, vocab] logits, in `logits`' dtype, whose greedy choice is the Gumbel-max sample: 0 there, -inf elsewhere.

    Greedy decoding over these equals sampling with common random numbers, exactly in any dtype (a bf16 copy of
    the noisy scores would round ties)."""
    chosen = gumbel_scores(logits, keys, step, temperature).argmax(-1, keepdim=True)
    out = torch.full_like(logits, float("-inf"))
    return out.scatter_(-1, chosen, 0.0)


class CommonNoiseSampler(LogitsProcessor):
    """transformers logits processor for `generate(do_sample=False, ...)`: each row samples with its key's noise."""

    def __init__(self, keys: torch.Tensor, prompt_length: int, temperature: float):
        self.keys, self.prompt_length, self.temperature = keys, prompt_length, temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return forced_logits(scores, self.keys, input_ids.shape[1] - self.prompt_length, self.temperature)
