"""The steering stage: subtract the EM direction while the misaligned model answers, against matched controls.

Directions come from the probe stage's (cached) captures on the probe questions; spillover is measured
on the evaluation questions, which the direction never saw. Every coefficient of the sweep, then
every control direction at the chosen coefficient, runs as rows of batched generate calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from emis.directions import ControlConfig, ControlFamilySet, control_directions, diff_in_means
from emis.io import atomic_file, atomic_write_json
from emis.judges.coherence import answer_logprobs, offline_coherence, repetition
from emis.judges.spillover import contains_code
from emis.models import LoadedModel, load_model
from emis.evaluation import EvalSet, evaluation_sampling, evaluation_set, judge_rows, judged_coherence, mean_score
from emis.judges.llm import JudgeError, LLMJudge, judge_from_config
from emis.organisms.sample import SamplingConfig
from emis.probe import model_spec, role_activations
from emis.steering import SteeredGenerations, Steering, generate_steered, scaled_direction
from emis.verdicts import ControlFamily, QuestionSplit, decide, effect_points, reduction_ci, split_questions

log = logging.getLogger(__name__)


@dataclass
class RowStats:
    """Per generated row: log-likelihood under the unsteered model, repetition and whether it spills code."""

    logprobs: np.ndarray
    repetition: np.ndarray
    spills: np.ndarray

    def take(self, rows: np.ndarray) -> "RowStats":
        return RowStats(self.logprobs[rows], self.repetition[rows], self.spills[rows])

    def offline_coherence(self, reference: "RowStats") -> float:
        """Offline coherence of these rows against `reference` rows (the unsteered answers to the same prompts)."""
        return offline_coherence(self.logprobs, self.repetition, self.spills, reference.logprobs, reference.repetition, reference.spills)


@dataclass
class SweepOutcome:
    """Per steering: spill rate per evaluation unit, per-row statistics and write norms, the answers and (with a
    judge) their scores. Coherence is computed on any subset of rows (a split) by `coherence`."""

    spill: list[np.ndarray]
    rows: list[RowStats]
    write_norms: list[np.ndarray]
    answers: list[list[str]]
    judged: list[list[dict[str, Any]]] | None = None

    def coherence(self, k: int, rows: np.ndarray, reference: RowStats) -> float:
        """Steering k's coherence on `rows`: the judge's `coherent`/100 when judged, else offline against `reference`
        (the unsteered rows' statistics on the same rows)."""
        if self.judged is not None:
            return judged_coherence([self.judged[k][i] for i in rows])
        return self.rows[k].take(rows).offline_coherence(reference.take(rows))

    def pick(self, ks: list[int]) -> "SweepOutcome":
        """The outcome of steerings `ks` only, in that order."""
        return SweepOutcome([self.spill[k] for k in ks], [self.rows[k] for k in ks], [self.write_norms[k] for k in ks],
                            [self.answers[k] for k in ks], None if self.judged is None else [self.judged[k] for k in ks])


def resolve_layers(layer: Any, n_layers: int) -> list[int]:
    """`all`, one index or a list (negative ones count from the end), checked against the model."""
    wanted = list(range(n_layers)) if layer == "all" else [layer] if isinstance(layer, int) else list(layer)
    out = []
    for i in wanted:
        resolved = i + n_layers if i < 0 else i
        if not 0 <= resolved < n_layers:
            raise ValueError(f"steer.layer={i} is out of range for a model with {n_layers} layers (0..{n_layers - 1} or -1..-{n_layers})")
        out.append(resolved)
    return sorted(set(out))


def generation_cache(cfg: DictConfig) -> Path:
    """Where steered generations are cached (by content), shared by every experiment."""
    return Path(cfg.paths.outputs) / "cache" / "generations"


def generation_key(model: LoadedModel, prompts: list[str], steerings: list[Steering], sampling: SamplingConfig) -> str:
    """sha256 of everything that determines a batched steered generation (not the batch size: with common random
    numbers the answers do not depend on it)."""
    noise = {k: v for k, v in asdict(sampling).items() if k != "batch_size"}
    h = hashlib.sha256(json.dumps([model.spec.to_dict(), model.weights_id, prompts, noise]).encode())
    for st in steerings:
        h.update(json.dumps([st.coefficient, st.mode, st.where, st.layers]).encode())
        for layer in st.layers:
            h.update(st.vectors[layer].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_generations(model: LoadedModel, prompts: list[str], steerings: list[Steering], sampling: SamplingConfig,
                       cache_dir: Path | None) -> tuple[SteeredGenerations, list[np.ndarray]]:
    """Steered answers and their log-likelihoods under the unsteered model, reused from `cache_dir` when computed before.

    Log-likelihoods are scored in batches of a fixed size, not the sampling batch size, so they do not change with it."""
    path = None if cache_dir is None else Path(cache_dir) / f"{generation_key(model, prompts, steerings, sampling)}.json"
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            log.info("generations cache hit: %s", path)
            gens = SteeredGenerations(saved["answers"], saved["tokens"], saved["write_norms"])
            return gens, [np.array(lp, float) for lp in saved["logprobs"]]
        except (json.JSONDecodeError, KeyError) as err:
            log.warning("ignoring unreadable generations cache %s (%s)", path, err)
    gens = generate_steered(model, prompts, steerings, sampling)
    logprobs = [answer_logprobs(model, prompts, answers) for answers in gens.answers]
    if path is not None:
        atomic_write_json(path, {"answers": gens.answers, "tokens": gens.tokens, "write_norms": gens.write_norms,
                                 "logprobs": [[None if np.isnan(x) else float(x) for x in lp] for lp in logprobs]})
    return gens, logprobs


def run_sweep(model: LoadedModel, evals: EvalSet, steerings: list[Steering], sampling: SamplingConfig,
              cache_dir: Path | None = None, judge: LLMJudge | None = None) -> SweepOutcome:
    """Generate under every steering: spill per unit, per-row statistics and write norms, judge scores when judged."""
    gens, logprobs = cached_generations(model, evals.prompts, steerings, sampling, cache_dir)
    flags = [np.array([contains_code(a) for a in answers], bool) for answers in gens.answers]
    rows = [RowStats(lp, np.array([repetition(t) for t in tokens], float), f) for lp, tokens, f in zip(logprobs, gens.tokens, flags)]
    judged = None
    if judge is not None:
        judged = [judge_rows(judge, evals, answers) for answers in tqdm(gens.answers, desc="judging", unit="steering")]
    return SweepOutcome([evals.unit_means(f) for f in flags], rows, [np.array(w, float) for w in gens.write_norms],
                        gens.answers, judged)


def best_point(alphas: list[float], spill: dict[int, list[float]], coherence: dict[int, list[float]], tolerance: float) -> tuple[int, int]:
    """(layer, α index) with the lowest spillover whose coherence is within `tolerance` of unsteered (α = 0)."""
    zero = alphas.index(0.0)
    if any(np.isnan(cs[zero]) for cs in coherence.values()):
        raise JudgeError("no unsteered answer got a coherence score (the judge returned no numeric `coherent` score); "
                         "check the judge model supports logprobs and scores 0-100")
    allowed = [(layer, i) for layer, cs in coherence.items() for i, c in enumerate(cs) if c >= cs[zero] - tolerance]
    return min(allowed, key=lambda p: (spill[p[0]][p[1]], abs(alphas[p[1]]), p[0]))


def plot_steering(path: Path, alphas: list[float], spill: dict[int, list[float]], coherence: dict[int, list[float]],
                  chosen: tuple[int, int], unsteered: float, control_spill: dict[str, list[float]], title: str,
                  coherence_label: str) -> None:
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
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def _key(alpha: float) -> str:
    return f"{alpha:g}"


def run_steer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Coefficient sweep of the EM direction at each configured layer, then controls at the best (layer, α)."""
    judge = judge_from_config(cfg.judge)
    with judge or nullcontext():
        return _steer(cfg, out, judge)


def mean_projection(calibration: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """E|h·v̂| over calibration activations h [N, d]: what ablating v moves h by, on average (STATS.md section 3)."""
    return (calibration.double() @ (v.double() / v.double().norm())).abs().mean()


def matched_controls(families: dict[str, ControlFamilySet], real: torch.Tensor, layer: int, alpha: float, mode: str,
                     where: str, calibration: torch.Tensor) -> list[tuple[str, Steering]]:
    """Every control direction as a steering at the chosen α whose write into the residual matches the real one:
    subtract mode at the real vector's norm (the write is exactly α|v|); ablate mode with the coefficient
    rescaled by E|h·û_real| / E|h·û_control| on the calibration activations."""
    real_moved = mean_projection(calibration, real) if mode == "ablate" else None
    out = []
    for family, fam in families.items():
        for u in fam.units:
            if mode == "subtract":
                out.append((family, Steering({layer: u * real.norm()}, alpha, mode=mode, where=where)))
            else:
                scale = float(real_moved / mean_projection(calibration, u).clamp_min(1e-12))
                out.append((family, Steering({layer: u}, alpha * scale, mode=mode, where=where)))
    return out


def measure_controls(flat: list[tuple[str, Steering]], outcome: SweepOutcome, unsteered: np.ndarray,
                     reference: RowStats | None = None) -> dict[str, ControlFamily]:
    """Per family, each member's effect (points) against `unsteered`, mean write norm and, given the unsteered
    `reference` rows of the same prompts, offline coherence."""
    measured: dict[str, ControlFamily] = {}
    for k, (family, _) in enumerate(flat):
        m = measured.setdefault(family, ControlFamily([]))
        m.effects.append(effect_points(unsteered, outcome.spill[k]))
        m.write_norms.append(float(outcome.write_norms[k].mean()))
        if reference is not None:
            m.coherence.append(outcome.rows[k].offline_coherence(reference))
    return measured


def steering_tiers(families: dict[str, Any]) -> dict[str, list[str]]:
    """Which control families gate which verdict tier (the families present for this model)."""
    return {"direction": [f for f in ("random", "shuffled_label", "wrong_layer") if f in families],
            "em": [f for f in ("secure_vs_base",) if f in families],
            "layer": [f for f in ("wrong_layer_raw",) if f in families]}


def _steer(cfg: DictConfig, out: Path, judge: LLMJudge | None) -> dict[str, Any]:
    s = cfg.steer
    acts, paths = role_activations(cfg, cfg.model)
    model = load_model(model_spec(cfg.model, "misaligned"))
    layers = resolve_layers(OmegaConf.to_object(s.layer) if OmegaConf.is_config(s.layer) else s.layer, model.n_layers)
    em = diff_in_means(acts["misaligned"], acts["aligned"])
    residual_norms = acts["misaligned"].activations.norm(dim=-1).mean(0)
    vectors = {layer: scaled_direction(em.layer(layer), s.scale, float(residual_norms[em.layers.index(layer)])) for layer in layers}
    alphas = sorted({0.0, *(float(a) for a in s.alphas)})
    zero = alphas.index(0.0)
    sampling = evaluation_sampling(cfg)
    evals = evaluation_set(cfg, model.tokenizer, int(s.n_prompts))
    split = split_questions(evals.ids, float(s.selection.share), int(s.selection.seed))
    select_rows, report_rows = evals.rows_of(split.select), evals.rows_of(split.report)
    cache = generation_cache(cfg)

    sweeps = {layer: run_sweep(model, evals, [Steering({layer: vectors[layer]}, a, mode=s.mode, where=s.where) for a in alphas],
                               sampling, cache, judge) for layer in layers}
    reference = sweeps[layers[0]].rows[zero]  # unsteered rows: the same answers at every layer (common random numbers)

    def curves(units: np.ndarray, rows: np.ndarray) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
        return ({l: [float(x[units].mean()) for x in sw.spill] for l, sw in sweeps.items()},
                {l: [sw.coherence(k, rows, reference) for k in range(len(alphas))] for l, sw in sweeps.items()})

    select_spill, select_coherence = curves(split.select, select_rows)
    layer, b = best_point(alphas, select_spill, select_coherence, float(s.coherence_tolerance))
    spill, coherence = curves(split.report, report_rows)
    sweep = sweeps[layer]
    unsteered, steered = sweep.spill[zero][split.report], sweep.spill[b][split.report]
    clusters = [evals.ids[u] for u in split.report]
    reduction = effect_points(unsteered, steered)
    ci = reduction_ci(unsteered, steered, clusters, float(s.ci_level), int(s.n_bootstrap), int(s.controls.seed))

    row = em.layers.index(layer)
    families = control_directions(acts["misaligned"], acts["aligned"], acts.get("base"), layer,
                                  ControlConfig(**OmegaConf.to_container(s.controls, resolve=True)))
    flat = matched_controls(families, vectors[layer], layer, alphas[b], s.mode, s.where, acts["misaligned"].activations[:, row])
    controls = run_sweep(model, evals.subset(split.report), [st for _, st in flat], sampling, cache)
    report_reference = reference.take(report_rows)
    unsteered_offline = report_reference.offline_coherence(report_reference)
    measured = measure_controls(flat, controls, unsteered, report_reference)
    for name, fam in families.items():
        final = fam.units.double() @ em.units[row].double()
        measured[name].cosine_to_real = [float(x) for x in final]
        if not torch.allclose(final, fam.raw_cosine.double(), atol=1e-6):
            measured[name].raw_cosine_to_real = [float(x) for x in fam.raw_cosine]
    tiers = steering_tiers(families)
    verdicts = decide(reduction, ci, {n: m.effects for n, m in measured.items()}, tiers)
    tolerance = float(s.coherence_tolerance)
    real_offline = sweep.rows[b].take(report_rows).offline_coherence(report_reference)
    real_write = float(sweep.write_norms[b][report_rows].mean())
    plot_steering(out / "steering.png", alphas, spill, coherence, (layer, b), float(unsteered.mean()),
                  {n: [float(controls.spill[k].mean()) for k, (f, _) in enumerate(flat) if f == n] for n in families},
                  f"{cfg.model.family}: layer {layer}, α={alphas[b]:g} ({s.mode}): {verdicts.verdict}",
                  "judge coherent / 100" if judge else "offline coherence (unsteered = 1)")
    write_generations(out / "generations.jsonl", layer, alphas, evals, sweep, split)
    log.info("layer %d: spillover %.3f -> %.3f at α=%g on the report split (%.1f points, CI %.1f..%.1f): %s, p %s",
             layer, float(unsteered.mean()), float(steered.mean()), alphas[b], reduction, ci[0], ci[1], verdicts.verdict,
             {k: round(v, 3) for k, v in verdicts.p_holm.items()})
    metrics = {
        "model": cfg.model.family,
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
                              "selection_coherence": {_key(a): c for a, c in zip(alphas, select_coherence[l])}} for l in layers},
        "best": {"alpha": alphas[b], "layer": layer, "spillover": spill[layer][b], "coherence": coherence[layer][b]},
        "unsteered_spillover": float(unsteered.mean()),
        "reduction_points": reduction,
        "ci95": list(ci),
        "controls": {name: m.to_dict() | {"coherence_flagged": int(sum(c < unsteered_offline - tolerance for c in m.coherence))}
                     for name, m in measured.items()},
        "delta_norm": {"real": real_write, "controls": {name: m.write_norms for name, m in measured.items()}},
        "real_offline_coherence": real_offline,
        "p_values": verdicts.p_values,
        "p_holm": verdicts.p_holm,
        "tiers": tiers,
        "verdicts": verdicts.to_dict(),
        "verdict": verdicts.verdict,
        "direction": {"norm": float(em.layer(layer).norm()), "residual_norm": float(residual_norms[row]),
                      "steering_vector_norm": float(vectors[layer].norm())},
        "n_prompts": len(evals.questions), "n_generations": len(evals.prompts),
        "questions": str(cfg.eval.questions) if cfg.eval.questions is not None else s.prompts,
        "activations": paths,
    }
    if sweep.judged is not None:
        metrics["judge"] = {"model": cfg.judge.model, **{name: {_key(a): mean_score([rows[i] for i in report_rows], name)
                                                                for a, rows in zip(alphas, sweep.judged)}
                                                         for name in ("aligned", "coherent")}}
    return metrics


def write_generations(path: Path, layer: int, alphas: list[float], evals: EvalSet, sweep: SweepOutcome,
                      split: QuestionSplit) -> None:
    """The chosen layer's answers at every α, one JSON row each, with its split, spill flag and judge scores when judged."""
    report = set(split.report.tolist())
    with atomic_file(path, "w") as f:
        for k, (alpha, answers) in enumerate(zip(alphas, sweep.answers)):
            for row, (prompt, answer) in enumerate(zip(evals.prompts, answers)):
                unit = int(evals.units[row])
                record = {"layer": layer, "alpha": alpha, "question_id": evals.ids[unit],
                          "split": "report" if unit in report else "select", "prompt": prompt,
                          "answer": answer, "spill": contains_code(answer)}
                f.write(json.dumps(record | (sweep.judged[k][row] if sweep.judged else {})) + "\n")
