"""Perturbation-matched controls (STATS.md section 3): every control direction steered with a measured write into
the residual that matches the real steering's, in `subtract` and `ablate` modes alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emis.activations import left_padded
from emis.directions import ControlFamilySet, WriteMatch
from emis.evaluation import EvalSet
from emis.generation import Steering
from emis.models import LoadedModel, residual, traced_batches
from emis.organisms.sample import SamplingConfig
from emis.stats import ControlFamily, effect_points
from emis.sweep import SweepOutcome, run_sweep


@dataclass(frozen=True)
class _ProjectionBatch:
    inputs: dict
    steered: torch.Tensor  # [B, T] 1 at the positions that produced an answer token
    units: torch.Tensor  # [C, d] unit directions
    layer: int


def _projection_rows(model: LoadedModel, batch: _ProjectionBatch) -> torch.Tensor:
    """[B, C]: per row, the mean over its steered positions of |h·u_c| at the layer's output (what ablating u_c writes)."""
    with torch.no_grad(), model.lm.trace(batch.inputs):
        h = residual(model.layers[batch.layer].output)
        m = batch.steered.to(h.device)
        proj = (h.float() @ batch.units.to(h.device).T).abs() * m[..., None]
        out = (proj.sum(1) / m.sum(1, keepdim=True)).cpu().save()
    return out


def generation_projections(model: LoadedModel, prompts: list[str], tokens: list[list[int]], layer: int,
                           units: torch.Tensor, max_new_tokens: int, batch_size: int = 64) -> np.ndarray:
    """[rows, C]: per answer, the mean |h·u_c| over the positions that produced its tokens (the last prompt token,
    then each answer token), as `generate_steered` averages its write norms; the calibration of ablate-mode controls."""
    tok = model.tokenizer
    seqs, steps = [], []
    for prompt, ids in zip(prompts, tokens):
        n = max(1, min(len(ids) + 1, max_new_tokens))
        seqs.append(tok(prompt, add_special_tokens=False).input_ids + list(ids[: n - 1]))
        steps.append(n)
    batches = []
    for start in range(0, len(seqs), batch_size):
        inputs, steered = left_padded(tok, seqs[start : start + batch_size], steps[start : start + batch_size])
        batches.append(_ProjectionBatch(inputs, steered.float(), units.float(), layer))
    return torch.cat(traced_batches(model, batches, _projection_rows, "control calibration", progress=False)).double().numpy()


def matched_controls(model: LoadedModel, scorer: LoadedModel, evals: EvalSet, families: dict[str, ControlFamilySet],
                     real: torch.Tensor, layer: int, alpha: float, mode: str, where: str, real_write: float,
                     unsteered: SweepOutcome, sampling: SamplingConfig, cache_dir: Path | None,
                     match: WriteMatch) -> tuple[list[str], SweepOutcome]:
    """Every control direction steered on `evals` with a measured write that matches the real steering's
    `real_write` (STATS.md section 3); returns each member's family and the outcome.

    subtract: the write is exactly α|v|, so each unit direction gets the real vector's norm. ablate: the write is
    c·|h·û|, so each control's coefficient c starts at real_write / E|h·û| over the positions that produced the
    `unsteered` answers, then is rescaled by the measured write for the controls that miss by more than the
    tolerance. A zero real write (α = 0 chosen) leaves every control at coefficient 0: the unsteered outcome."""
    names = [name for name, fam in families.items() for _ in range(fam.units.shape[0])]
    units = torch.cat([fam.units for fam in families.values()])
    if mode == "subtract":
        steerings = [Steering({layer: u * real.norm()}, alpha, mode=mode, where=where) for u in units]
        return names, run_sweep(model, scorer, evals, steerings, sampling, cache_dir)
    if real_write == 0.0:
        return names, unsteered.pick([0] * len(names))
    projections = generation_projections(model, evals.prompts, unsteered.tokens[0], layer, units, sampling.max_new_tokens)
    coefs = real_write / np.maximum(projections.mean(0), 1e-12)
    outcome = run_sweep(model, scorer, evals, [Steering({layer: u}, float(c), mode=mode, where=where) for u, c in zip(units, coefs)],
                        sampling, cache_dir)
    for _ in range(match.rounds):
        measured = np.array([w.mean() for w in outcome.write_norms])
        missed = np.flatnonzero(np.abs(measured / real_write - 1.0) > match.tolerance)
        if missed.size == 0:
            break
        coefs[missed] *= real_write / np.maximum(measured[missed], 1e-12)
        redo = run_sweep(model, scorer, evals, [Steering({layer: units[i]}, float(coefs[i]), mode=mode, where=where)
                                                for i in missed], sampling, cache_dir)
        outcome = outcome.replaced(missed.tolist(), redo)
    return names, outcome


def measure_controls(names: list[str], outcome: SweepOutcome, unsteered: np.ndarray) -> dict[str, ControlFamily]:
    """Per family, each member's effect (points) against `unsteered`, mean write norm and offline coherence."""
    measured: dict[str, ControlFamily] = {}
    for k, family in enumerate(names):
        m = measured.setdefault(family, ControlFamily([]))
        m.effects.append(effect_points(unsteered, outcome.spill[k]))
        m.write_norms.append(float(outcome.write_norms[k].mean()))
        m.coherence.append(outcome.rows[k].offline_coherence())
    return measured
