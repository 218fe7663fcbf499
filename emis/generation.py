"""Steered generation through nnsight: h <- h - a*v (subtract) or h <- h - a*(h.u)u (ablate) at every generated token.

Many steerings (coefficients of a sweep, control directions) run as rows of one batched `generate`
call: rows are steerings x prompts, each row carrying its own vector and coefficient.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from emis.crn import forced_logits, row_keys
from emis.models import LoadedModel, residual, traced_batches
from emis.organisms.sample import SamplingConfig, answer_ids, stop_token_ids
from emis.settings import MODES, SCALES, WHERES

log = logging.getLogger(__name__)
Mode = Literal["subtract", "ablate"]
Where = Literal["generated", "all"]

# A bounded `tracer.iter[:N]` is cut short when every row ends its turn before N tokens; nnsight warns,
# and emis reads the result in a separate invoke precisely so that nothing is lost then.
warnings.filterwarnings("ignore", message=r".*was never reached: the loop asked for a step", category=UserWarning)


@dataclass(frozen=True)
class Steering:
    """One intervention, applied at each of its layers on every steered position.

    `vectors` maps a layer to a [d] vector in the residual's own units (already scaled, see
    `scaled_direction`); subtract moves h by -coefficient*vector, ablate removes coefficient times
    h's component along the vector's direction. `where`: "generated" steers the position that
    produces each generated token (the last prompt token, then every new token), "all" also steers
    every prompt position."""

    vectors: dict[int, torch.Tensor]
    coefficient: float
    mode: Mode = "subtract"
    where: Where = "generated"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"steering mode must be one of {MODES}, got {self.mode!r}")
        if self.where not in WHERES:
            raise ValueError(f"steering `where` must be one of {WHERES}, got {self.where!r}")
        if not self.vectors:
            raise ValueError("a steering needs at least one layer")
        if not torch.isfinite(torch.tensor(float(self.coefficient))):
            raise ValueError(f"steering coefficient must be finite, got {self.coefficient}")
        for layer, v in self.vectors.items():
            if v.dim() != 1 or not torch.isfinite(v).all():
                raise ValueError(f"the layer-{layer} steering vector must be a finite [d] tensor")

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)


@dataclass
class SteeredGenerations:
    """Answers (and their token ids, end-of-turn excluded) per steering, then per prompt, and the mean norm of what
    the steering wrote into the residual at the positions that produced each answer's tokens (summed over layers)."""

    answers: list[list[str]]
    tokens: list[list[list[int]]]
    write_norms: list[list[float]]


def scaled_direction(direction: torch.Tensor, scale: str, residual_norm: float | None = None) -> torch.Tensor:
    """The direction in steering units: itself (direction_norm) or its unit vector times the layer's mean residual norm."""
    if scale == "direction_norm":
        return direction.float()
    if scale == "residual_norm":
        if residual_norm is None:
            raise ValueError("scale 'residual_norm' needs the layer's mean residual norm")
        return direction.float() / direction.norm().clamp_min(1e-12) * residual_norm
    raise ValueError(f"steering scale must be one of {SCALES}, got {scale!r}")


def _check_batch(model: LoadedModel, steerings: Sequence[Steering]) -> tuple[list[int], str, str]:
    """Steerings of one call share layers, mode and where; their vectors fit the model."""
    if not steerings:
        raise ValueError("no steerings to generate with (give at least one, e.g. coefficient 0)")
    first = steerings[0]
    for s in steerings:
        if (s.layers, s.mode, s.where) != (first.layers, first.mode, first.where):
            raise ValueError("steerings batched into one call must share layers, mode and `where`")
    for layer in first.layers:
        if not 0 <= layer < model.n_layers:
            raise ValueError(f"steering layer {layer} is out of range for a model with {model.n_layers} layers (0..{model.n_layers - 1})")
    for s in steerings:
        for layer, v in s.vectors.items():
            if v.shape[0] != model.d_model:
                raise ValueError(f"the layer-{layer} steering vector has size {v.shape[0]}, the model's residual has {model.d_model}")
    return first.layers, first.mode, first.where


@dataclass(frozen=True)
class SteeredBatch:
    """One generate call's rows: inputs, each steered layer's per-row vectors [B, d], per-row coefficients [B],
    and per-row sampling keys [B] (`emis.crn`)."""

    rows: dict
    keys: torch.Tensor
    per_layer: dict[int, torch.Tensor]
    coef: torch.Tensor
    mode: str
    where: str
    cfg: SamplingConfig


def _steer_rows(model: LoadedModel, batch: SteeredBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """One nnsight generate over a batch: every generated step, each steered layer's residual is moved, then the
    step's logits are replaced by the common-random-numbers choice (greedy decoding then samples). Returns the
    token ids and the [B, max_new_tokens] norm of each step's write at the position producing the token (meaningful for
    the steps that ran: the caller reads no others)."""
    rows, per_layer, coef, mode, where, cfg = batch.rows, batch.per_layer, batch.coef, batch.mode, batch.where, batch.cfg
    n = cfg.max_new_tokens
    span = slice(None) if where == "all" else slice(-1, None)
    tok = model.tokenizer
    a = coef[:, None, None]
    # Per layer, [B, 1, d]: subtract's write a*v, the same on every step (so is its norm), or ablate's unit vector u.
    moves = {layer: a * vecs[:, None, :] if mode == "subtract"
             else vecs[:, None, :] / vecs[:, None, :].norm(dim=-1, keepdim=True).clamp_min(1e-12)
             for layer, vecs in per_layer.items()}
    with model.lm.generate(max_new_tokens=n, eos_token_id=stop_token_ids(model.lm, tok), pad_token_id=tok.pad_token_id,
                           do_sample=False) as tracer:
        with tracer.invoke(rows):
            written = torch.zeros(coef.shape[0], n).save()
            for step in tracer.iter[:n]:
                for layer, move in moves.items():
                    h = residual(model.layers[layer].output)
                    write = move.to(h.device)
                    if mode == "ablate":
                        write = a.to(h.device) * (h[:, span].float() * write).sum(-1, keepdim=True) * write
                        written[:, step] += write[:, -1].norm(dim=-1).cpu()
                    # in float32 whatever the model's dtype, rounded once back to it: in bf16, alpha = 1 ablation then
                    # leaves only the rounding of the result along u (at most 2^-8 of its norm)
                    h[:, span] = (h[:, span].float() - write).to(h.dtype)
                if cfg.temperature > 0:
                    logits = model.lm.output.logits
                    logits[:, -1] = forced_logits(logits[:, -1], batch.keys, step, cfg.temperature)
        with tracer.invoke():
            out = tracer.result.detach().cpu().save()
    if mode == "subtract":
        written = written + sum(move[:, 0].norm(dim=-1) for move in moves.values())[:, None]
    return out, written


def generate_steered(
    model: LoadedModel, prompts: Sequence[str], steerings: Sequence[Steering], cfg: SamplingConfig, progress: bool = True
) -> SteeredGenerations:
    """Answers of every prompt under every steering, as batched rows of as few generate calls as the batch size allows.

    Prompts are chat-templated strings. The noise of a prompt's answer is keyed by (cfg.seed, prompt, repeat index),
    the same under every steering and in any batch (`emis.crn`)."""
    layers, mode, where = _check_batch(model, steerings)
    if not prompts:
        raise ValueError("no prompts to generate from")
    tok = model.tokenizer
    pairs = [(k, p) for k in range(len(steerings)) for p in range(len(prompts))]
    keys = row_keys(prompts, cfg.seed)
    stops = stop_token_ids(model.lm, tok)
    tokens: list[list[list[int]]] = [[[] for _ in prompts] for _ in steerings]
    write_norms: list[list[float]] = [[0.0 for _ in prompts] for _ in steerings]
    chunks, batches = [], []
    for start in range(0, len(pairs), cfg.batch_size):
        chunk = pairs[start : start + cfg.batch_size]
        enc = tok([prompts[p] for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        per_layer = {layer: torch.stack([steerings[k].vectors[layer].float() for k, _ in chunk]) for layer in layers}
        coef = torch.tensor([float(steerings[k].coefficient) for k, _ in chunk])
        chunks.append(chunk)
        batches.append(SteeredBatch(dict(enc), keys[[p for _, p in chunk]], per_layer, coef, mode, where, cfg))
    outs = traced_batches(model, batches, _steer_rows, "steered generate", progress)
    for chunk, batch, (out, written) in zip(chunks, batches, outs):
        for (k, p), row, norms in zip(chunk, out[:, batch.rows["input_ids"].shape[1] :].tolist(), written):
            tokens[k][p] = answer_ids(row, stops)
            steps = min(len(tokens[k][p]) + 1, len(row))  # the answer's tokens and the one that ended it
            write_norms[k][p] = float(norms[: max(steps, 1)].mean())
    answers = [[tok.decode(ids, skip_special_tokens=True) for ids in per_k] for per_k in tokens]
    return SteeredGenerations(answers, tokens, write_norms)


def generate_answers(model: LoadedModel, prompts: Sequence[str], cfg: SamplingConfig, progress: bool = True) -> SteeredGenerations:
    """Unsteered answers through the same nnsight generate path (a zero-coefficient steering changes nothing)."""
    null = Steering({model.n_layers - 1: torch.zeros(model.d_model)}, 0.0)
    return generate_steered(model, prompts, [null], cfg, progress)
