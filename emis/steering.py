"""The steering experiment: sweep the EM direction over layers x α, choose (layer, α) on the selection split, and
measure the reduction, its interval and write-matched control families on the report split (STATS.md).

Every coefficient of the sweep, then every control direction at the chosen coefficient, runs as rows of batched
generate calls (`emis.sweep`); the API's `emis.steer` and the steering stage both call `steer_experiment`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig

from emis.activations import ActivationSet
from emis.configured import coherence_rule, control_config
from emis.directions import ControlConfig, control_directions, diff_in_means
from emis.evaluation import EvalSet, mean_score, score_method_counts
from emis.generation import Steering, scaled_direction
from emis.judges.llm import LLMJudge
from emis.models import LoadedModel
from emis.organisms.sample import SamplingConfig
from emis.stats import QuestionSplit, decide, effect_points, reduction_ci, split_questions
from emis.sweep import CoherenceRule, SweepOutcome, best_point, coherence_shift_ci, run_sweep
from emis.write_matching import matched_controls, measure_controls

log = logging.getLogger(__name__)


def plot_steering(alphas: list[float], spill: dict[int, list[float]], coherence: dict[int, list[float]],
                  chosen: tuple[int, int], unsteered: float, control_spill: dict[str, list[float]], title: str,
                  coherence_label: str) -> Figure:
    """Spillover (left) and coherence (right) against α for every swept layer, on the report split; each control
    family's spillover (5-95%) at the chosen α shaded on the left."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, cx = fig.subplots(1, 2)
    layer, b = chosen
    for color, (family, values) in zip(("C0", "C1", "C2", "C4", "C5", "C6"), control_spill.items()):
        lo, hi = np.percentile(100 * np.array(values), [5, 95])
        ax.axhspan(lo, max(hi, lo + 0.4), color=color, alpha=0.15, lw=0, label=f"{family} controls at α={alphas[b]:g} (5-95%)")
    for i, l in enumerate(sorted(spill)):
        style = dict(lw=2.2, color="C3") if l == layer else dict(lw=1, color=f"C{7 + i % 3}", alpha=0.8)
        ax.plot(alphas, 100 * np.array(spill[l]), "-o", ms=3, label=f"layer {l}" + (" (chosen)" if l == layer else ""), **style)
        cx.plot(alphas, coherence[l], "--s", ms=3, label=f"layer {l}", **style)
    ax.axhline(100 * unsteered, color="k", lw=0.8, ls=":", label="unsteered")
    ax.set(xlabel="steering coefficient α", ylabel="code spillover (% of answers, report split)", ylim=(0, 100), title=title)
    cx.set(xlabel="steering coefficient α", ylabel=coherence_label, title="coherence (report split)")
    ax.legend(fontsize=6.5, loc="upper right")
    cx.legend(fontsize=7)
    return fig


def _key(alpha: float) -> str:
    return f"{alpha:g}"


def steering_tiers(families: dict[str, Any]) -> dict[str, list[str]]:
    """Which control families gate which verdict tier (the families present for this model)."""
    return {"direction": [f for f in ("random", "shuffled_label", "wrong_layer") if f in families],
            "em": [f for f in ("secure_vs_base",) if f in families],
            "layer": [f for f in ("wrong_layer_raw",) if f in families]}


@dataclass(frozen=True)
class SteerSettings:
    """What shapes one steering experiment, from the `steer`, `selection` and `controls` config groups (their YAML
    holds every default)."""

    alphas: list[float]  # the swept coefficients, 0 included
    mode: str
    where: str
    scale: str
    selection_share: float
    selection_seed: int
    ci_level: float
    n_bootstrap: int
    bootstrap_seed: int
    coherence: CoherenceRule
    coherence_scorer: str
    controls: ControlConfig  # the families, their seed and the write match

    @classmethod
    def from_config(cls, s: DictConfig, selection: DictConfig, controls: DictConfig) -> "SteerSettings":
        return cls(sorted({0.0, *(float(a) for a in s.alphas)}), str(s.mode), str(s.where), str(s.scale),
                   float(selection.share), int(selection.seed), float(s.ci_level), int(s.n_bootstrap), int(s.bootstrap_seed),
                   coherence_rule(s), str(s.coherence_scorer), control_config(controls))


@dataclass
class SteerResult:
    """One steering experiment: its `metrics.json` fields (`to_dict`), the chosen layer's sweep and what its figure
    shows (`plot`)."""

    metrics: dict[str, Any]
    evals: EvalSet
    split: QuestionSplit
    sweep: SweepOutcome
    figure: dict[str, Any]

    @property
    def reduction_points(self) -> float:
        return self.metrics["reduction_points"]

    @property
    def ci95(self) -> list[float]:
        return self.metrics["ci95"]

    @property
    def p_values(self) -> dict[str, float]:
        return self.metrics["p_values"]

    @property
    def verdict(self) -> str:
        return self.metrics["verdict"]

    def to_dict(self) -> dict[str, Any]:
        return self.metrics

    def plot(self) -> Figure:
        """Spillover and coherence against α for every swept layer, controls shaded (`plot_steering`)."""
        return plot_steering(**self.figure)


def steer_experiment(name: str, model: LoadedModel, scorer: LoadedModel, acts: dict[str, ActivationSet], evals: EvalSet,
                     layers: list[int], settings: SteerSettings, sampling: SamplingConfig, cache_dir: Path | None = None,
                     judge: LLMJudge | None = None) -> SteerResult:
    """Sweep the EM direction (from the captures `acts` of the misaligned, aligned and optionally base model) over
    `layers` x α, choose (layer, α) on the selection split, and measure the reduction, its interval and
    write-matched control families on the report split (STATS.md)."""
    s = settings
    em = diff_in_means(acts["misaligned"], acts["aligned"])
    residual_norms = acts["misaligned"].activations.norm(dim=-1).mean(0)
    vectors = {layer: scaled_direction(em.layer(layer), s.scale, float(residual_norms[em.layers.index(layer)])) for layer in layers}
    alphas = s.alphas
    zero = alphas.index(0.0)
    split = split_questions(evals.ids, s.selection_share, s.selection_seed)
    select_rows, report_rows = evals.rows_of(split.select), evals.rows_of(split.report)
    rule = s.coherence

    sweeps = {layer: run_sweep(model, scorer, evals, [Steering({layer: vectors[layer]}, a, mode=s.mode, where=s.where) for a in alphas],
                               sampling, cache_dir, judge) for layer in layers}

    def curves(units: np.ndarray, rows: np.ndarray) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
        return ({l: [float(x[units].mean()) for x in sw.spill] for l, sw in sweeps.items()},
                {l: [sw.coherence(k, rows) for k in range(len(alphas))] for l, sw in sweeps.items()})

    select_spill, select_coherence = curves(split.select, select_rows)
    select_clusters = [evals.ids[int(evals.units[r])] for r in select_rows]
    admissible = {l: [rule.admissible(sw, k, sw, zero, select_rows, select_clusters) for k in range(len(alphas))]
                  for l, sw in sweeps.items()}
    layer, b = best_point(alphas, select_spill, admissible)
    spill, coherence = curves(split.report, report_rows)
    sweep = sweeps[layer]
    unsteered, steered = sweep.spill[zero][split.report], sweep.spill[b][split.report]
    clusters = [evals.ids[u] for u in split.report]
    reduction = effect_points(unsteered, steered)
    ci = reduction_ci(unsteered, steered, clusters, s.ci_level, s.n_bootstrap, s.bootstrap_seed)
    report_row_clusters = [evals.ids[int(evals.units[r])] for r in report_rows]
    shift_ci = coherence_shift_ci(sweep.rows[b].take(report_rows), sweep.rows[zero].take(report_rows), report_row_clusters,
                                  rule.level, rule.n_resamples, rule.seed)

    row = em.layers.index(layer)
    families = control_directions(acts["misaligned"], acts["aligned"], acts.get("base"), layer, s.controls)
    real_write = float(sweep.write_norms[b][report_rows].mean())
    names, controls = matched_controls(model, scorer, evals.subset(split.report), families, vectors[layer], layer, alphas[b],
                                       s.mode, s.where, real_write, sweep.pick([zero]).subset(split.report, report_rows),
                                       sampling, cache_dir, s.controls.match)
    unsteered_offline = sweep.rows[zero].take(report_rows).offline_coherence()
    measured = measure_controls(names, controls, unsteered)
    for family, fam in families.items():
        final = fam.units.double() @ em.units[row].double()
        measured[family].cosine_to_real = [float(x) for x in final]
        if not torch.allclose(final, fam.raw_cosine.double(), atol=1e-6):
            measured[family].raw_cosine_to_real = [float(x) for x in fam.raw_cosine]
    tiers = steering_tiers(families)
    verdicts = decide(reduction, ci, {n: m.effects for n, m in measured.items()}, tiers)
    tolerance = rule.tolerance
    real_offline = sweep.rows[b].take(report_rows).offline_coherence()
    figure = dict(alphas=alphas, spill=spill, coherence=coherence, chosen=(layer, b), unsteered=float(unsteered.mean()),
                  control_spill={n: [float(controls.spill[k].mean()) for k, f in enumerate(names) if f == n] for n in families},
                  title=f"{name}: layer {layer}, α={alphas[b]:g} ({s.mode}): {verdicts.verdict}",
                  coherence_label="judge coherent / 100" if judge else f"offline coherence ({s.coherence_scorer} scorer; its own answers = 1)")
    log.info("layer %d: spillover %.3f -> %.3f at α=%g on the report split (%.1f points, CI %.1f..%.1f): %s, p %s",
             layer, float(unsteered.mean()), float(steered.mean()), alphas[b], reduction, ci[0], ci[1], verdicts.verdict,
             {k: round(v, 3) for k, v in verdicts.p_holm.items()})
    metrics = {
        "model": name,
        "layers": layers,
        "mode": s.mode, "where": s.where, "scale": s.scale,
        "alphas": alphas,
        "selection": split.to_dict(),
        "spillover": {_key(a): r for a, r in zip(alphas, spill[layer])},
        "coherence": {_key(a): c for a, c in zip(alphas, coherence[layer])},
        "coherence_source": "judge" if judge else "offline",
        "by_layer": {str(l): {"spillover": {_key(a): r for a, r in zip(alphas, spill[l])},
                              "coherence": {_key(a): c for a, c in zip(alphas, coherence[l])},
                              "selection_spillover": {_key(a): r for a, r in zip(alphas, select_spill[l])},
                              "selection_coherence": {_key(a): c for a, c in zip(alphas, select_coherence[l])},
                              "selection_admissible": {_key(a): ok for a, ok in zip(alphas, admissible[l])}} for l in layers},
        "best": {"alpha": alphas[b], "layer": layer, "spillover": spill[layer][b], "coherence": coherence[layer][b]},
        "unsteered_spillover": float(unsteered.mean()),
        "reduction_points": reduction,
        "ci95": list(ci),
        "controls": {name: m.to_dict() | {"coherence_flagged": int(sum(c < unsteered_offline - tolerance for c in m.coherence))}
                     for name, m in measured.items()},
        "delta_norm": {"real": real_write, "controls": {name: m.write_norms for name, m in measured.items()}},
        "absent_controls": {} if "base" in acts else {"secure_vs_base": "no base model: the EM-specific tier is not tested"},
        "real_offline_coherence": real_offline,
        "offline_coherence_shift_ci95": list(shift_ci),
        "coherence_scorer": s.coherence_scorer,
        "p_values": verdicts.p_values,
        "p_holm": verdicts.p_holm,
        "tiers": tiers,
        "verdicts": verdicts.to_dict(),
        "verdict": verdicts.verdict,
        "direction": {"norm": float(em.layer(layer).norm()), "residual_norm": float(residual_norms[row]),
                      "steering_vector_norm": float(vectors[layer].norm())},
        "n_prompts": len(evals.questions), "n_generations": len(evals.prompts),
    }
    if sweep.judged is not None:
        metrics["judge"] = {"model": judge.cfg.model, **{name: {_key(a): mean_score([rows[i] for i in report_rows], name)
                                                            for a, rows in zip(alphas, sweep.judged)}
                                                     for name in ("aligned", "coherent")},
                            # the chosen layer's judgements (generations.jsonl) by method: two keys = a mixed run
                            "score_methods": score_method_counts(sweep.judged)}
    return SteerResult(metrics, evals, split, sweep, figure)


