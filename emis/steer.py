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

from emis.directions import ControlConfig, control_directions, diff_in_means
from emis.io import atomic_file, atomic_write_json
from emis.judges.coherence import answer_logprobs, offline_coherence, repetition
from emis.judges.spillover import contains_code
from emis.models import LoadedModel, load_model
from emis.evaluation import EvalSet, evaluation_sampling, evaluation_set, judge_rows, judged_coherence, mean_score
from emis.judges.llm import JudgeError, LLMJudge, judge_from_config
from emis.organisms.sample import SamplingConfig
from emis.probe import model_spec, role_activations
from emis.specificity import ControlSummary, effect_points, effects_by_family, paired_bootstrap_ci, summarise_controls, verdict
from emis.steering import SteeredGenerations, Steering, generate_steered, scaled_direction

log = logging.getLogger(__name__)


Reference = tuple[np.ndarray, list[float], list[bool]]  # unsteered answers' log-likelihoods, repetition, code flags


@dataclass
class SweepOutcome:
    """Per steering: spill rate per evaluation unit, coherence, the answers and (with a judge) their scores."""

    spill: list[np.ndarray]
    coherence: list[float]
    answers: list[list[str]]
    judged: list[list[dict[str, Any]]] | None = None


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
    """sha256 of everything that determines a batched steered generation."""
    h = hashlib.sha256(json.dumps([model.spec.to_dict(), model.weights_id, prompts, asdict(sampling)]).encode())
    for st in steerings:
        h.update(json.dumps([st.coefficient, st.mode, st.where, st.layers]).encode())
        for layer in st.layers:
            h.update(st.vectors[layer].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_generations(model: LoadedModel, prompts: list[str], steerings: list[Steering], sampling: SamplingConfig,
                       cache_dir: Path | None) -> tuple[SteeredGenerations, list[np.ndarray]]:
    """Steered answers and their log-likelihoods under the unsteered model, reused from `cache_dir` when computed before."""
    path = None if cache_dir is None else Path(cache_dir) / f"{generation_key(model, prompts, steerings, sampling)}.json"
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            log.info("generations cache hit: %s", path)
            return SteeredGenerations(saved["answers"], saved["tokens"]), [np.array(lp, float) for lp in saved["logprobs"]]
        except (json.JSONDecodeError, KeyError) as err:
            log.warning("ignoring unreadable generations cache %s (%s)", path, err)
    gens = generate_steered(model, prompts, steerings, sampling)
    logprobs = [answer_logprobs(model, prompts, answers, sampling.batch_size) for answers in gens.answers]
    if path is not None:
        atomic_write_json(path, {"answers": gens.answers, "tokens": gens.tokens,
                                 "logprobs": [[None if np.isnan(x) else float(x) for x in lp] for lp in logprobs]})
    return gens, logprobs


def run_sweep(model: LoadedModel, evals: EvalSet, steerings: list[Steering], sampling: SamplingConfig,
              reference: Reference | None, cache_dir: Path | None = None,
              judge: LLMJudge | None = None) -> tuple[SweepOutcome, Reference]:
    """Generate under every steering; spill per unit, and coherence: the judge's `coherent`/100 when a judge is
    given, otherwise offline against `reference` (default: the first steering)."""
    gens, logprobs = cached_generations(model, evals.prompts, steerings, sampling, cache_dir)
    flags = [[contains_code(a) for a in answers] for answers in gens.answers]
    spill = [evals.unit_means(f) for f in flags]
    stats = [(lp, [repetition(t) for t in tokens], f) for lp, tokens, f in zip(logprobs, gens.tokens, flags)]
    ref = reference or stats[0]
    if judge is None:
        return SweepOutcome(spill, [offline_coherence(*st, *ref) for st in stats], gens.answers), ref
    judged = [judge_rows(judge, evals, answers) for answers in tqdm(gens.answers, desc="judging", unit="steering")]
    return SweepOutcome(spill, [judged_coherence(rows) for rows in judged], gens.answers, judged), ref


def best_point(alphas: list[float], spill: dict[int, list[float]], coherence: dict[int, list[float]], tolerance: float) -> tuple[int, int]:
    """(layer, α index) with the lowest spillover whose coherence is within `tolerance` of unsteered (α = 0)."""
    zero = alphas.index(0.0)
    if any(np.isnan(cs[zero]) for cs in coherence.values()):
        raise JudgeError("no unsteered answer got a coherence score (the judge returned no numeric `coherent` score); "
                         "check the judge model supports logprobs and scores 0-100")
    allowed = [(layer, i) for layer, cs in coherence.items() for i, c in enumerate(cs) if c >= cs[zero] - tolerance]
    return min(allowed, key=lambda p: (spill[p[0]][p[1]], abs(alphas[p[1]]), p[0]))


def plot_steering(path: Path, alphas: list[float], spill: list[float], coherence: list[float], best: int,
                  controls: dict[str, list[float]], title: str, coherence_label: str) -> None:
    """Spillover and coherence against α; each control family's spillover range at the chosen α shaded."""
    fig = Figure(figsize=(8.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(alphas, 100 * np.array(spill), "-o", color="C3", label="spillover, EM direction")
    for color, (family, values) in zip(("C0", "C1", "C2", "C4", "C5"), controls.items()):
        lo, hi = np.percentile(100 * np.array(values), [5, 95])
        ax.axhspan(lo, max(hi, lo + 0.4), color=color, alpha=0.18, lw=0, label=f"{family} controls at α={alphas[best]:g} (5-95%)")
    ax.axvline(alphas[best], color="grey", ls=":", lw=1, label=f"chosen α = {alphas[best]:g}")
    ax.set(xlabel="steering coefficient α", ylabel="code spillover (% of answers)", ylim=(0, 100), title=title)
    twin = ax.twinx()
    twin.plot(alphas, coherence, "--s", color="k", ms=3, label="coherence (right axis)")
    twin.set(ylabel=coherence_label, ylim=(0, 1.3))
    lines = ax.get_legend_handles_labels()
    tl = twin.get_legend_handles_labels()
    ax.legend(lines[0] + tl[0], lines[1] + tl[1], fontsize=7, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def _key(alpha: float) -> str:
    return f"{alpha:g}"


def run_steer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Coefficient sweep of the EM direction at each configured layer, then controls at the best (layer, α)."""
    judge = judge_from_config(cfg.judge)
    with judge or nullcontext():
        return _steer(cfg, out, judge)


def _steer(cfg: DictConfig, out: Path, judge: LLMJudge | None) -> dict[str, Any]:
    s = cfg.steer
    acts, paths = role_activations(cfg, cfg.model)
    model = load_model(model_spec(cfg.model, "misaligned"))
    layers = resolve_layers(OmegaConf.to_object(s.layer) if OmegaConf.is_config(s.layer) else s.layer, model.n_layers)
    em = diff_in_means(acts["misaligned"], acts["aligned"])
    residual_norms = acts["misaligned"].activations.norm(dim=-1).mean(0)
    vectors = {layer: scaled_direction(em.layer(layer), s.scale, float(residual_norms[em.layers.index(layer)])) for layer in layers}
    alphas = sorted({0.0, *(float(a) for a in s.alphas)})
    sampling = evaluation_sampling(cfg)
    evals = evaluation_set(cfg, model.tokenizer, int(s.n_prompts))
    cache = generation_cache(cfg)

    def steering(layer: int, v: torch.Tensor, alpha: float) -> Steering:
        return Steering({layer: v}, alpha, mode=s.mode, where=s.where)

    sweeps: dict[int, SweepOutcome] = {}
    reference = None
    for layer in layers:
        sweeps[layer], reference = run_sweep(model, evals, [steering(layer, vectors[layer], a) for a in alphas], sampling,
                                             reference, cache, judge)
    rates = {layer: [float(x.mean()) for x in sw.spill] for layer, sw in sweeps.items()}
    coherence = {layer: sw.coherence for layer, sw in sweeps.items()}
    layer, b = best_point(alphas, rates, coherence, float(s.coherence_tolerance))
    sweep = sweeps[layer]
    unsteered = sweep.spill[alphas.index(0.0)]
    reduction = effect_points(unsteered, sweep.spill[b])
    ci = paired_bootstrap_ci(unsteered, sweep.spill[b], int(s.n_bootstrap), int(s.controls.seed), float(s.ci_level))

    families = control_directions(acts["misaligned"], acts["aligned"], acts["base"], layer,
                                  ControlConfig(**OmegaConf.to_container(s.controls, resolve=True)))
    magnitude = vectors[layer].norm()
    flat = [(family, d * magnitude) for family, dirs in families.items() for d in dirs]
    controls, _ = run_sweep(model, evals, [steering(layer, v, alphas[b]) for _, v in flat], sampling, reference, cache)
    names = [family for family, _ in flat]
    effects = effects_by_family(names, unsteered, controls.spill)
    control_spill: dict[str, list[float]] = {family: [] for family in families}
    for family, spill in zip(names, controls.spill):
        control_spill[family].append(float(spill.mean()))
    summaries: dict[str, ControlSummary] = summarise_controls(reduction, effects)
    result = verdict(reduction, ci, summaries)

    plot_steering(out / "steering.png", alphas, rates[layer], coherence[layer], b, control_spill,
                  f"Steering {cfg.model.family} at layer {layer} ({s.mode}, {s.scale} units): {result}",
                  "judge coherent / 100" if judge else "offline coherence (unsteered = 1)")
    write_generations(out / "generations.jsonl", layer, alphas, evals, sweep)
    log.info("layer %d: spillover %.3f -> %.3f at α=%g (%.1f points, CI %.1f..%.1f): %s",
             layer, rates[layer][alphas.index(0.0)], rates[layer][b], alphas[b], reduction, ci[0], ci[1], result)
    metrics = {
        "model": cfg.model.family,
        "layers": layers,
        "mode": s.mode, "where": s.where, "scale": s.scale,
        "alphas": alphas,
        "spillover": {_key(a): r for a, r in zip(alphas, rates[layer])},
        "coherence": {_key(a): c for a, c in zip(alphas, coherence[layer])},
        "coherence_source": "judge" if judge else "offline",
        "by_layer": {str(l): {"spillover": {_key(a): r for a, r in zip(alphas, rates[l])},
                              "coherence": {_key(a): c for a, c in zip(alphas, coherence[l])}} for l in layers},
        "best": {"alpha": alphas[b], "layer": layer, "spillover": rates[layer][b], "coherence": coherence[layer][b]},
        "unsteered_spillover": rates[layer][alphas.index(0.0)],
        "reduction_points": reduction,
        "ci95": list(ci),
        "controls": {family: c.to_dict() for family, c in summaries.items()},
        "verdict": result,
        "direction": {"norm": float(em.layer(layer).norm()), "residual_norm": float(residual_norms[em.layers.index(layer)]),
                      "steering_vector_norm": float(magnitude)},
        "n_prompts": len(evals.questions), "n_generations": len(evals.prompts),
        "questions": str(cfg.eval.questions) if cfg.eval.questions is not None else s.prompts,
        "activations": paths,
    }
    if sweep.judged is not None:
        metrics["judge"] = {"model": cfg.judge.model, **{name: {_key(a): mean_score(rows, name) for a, rows in zip(alphas, sweep.judged)}
                                                         for name in ("aligned", "coherent")}}
    return metrics


def write_generations(path: Path, layer: int, alphas: list[float], evals: EvalSet, sweep: SweepOutcome) -> None:
    """The chosen layer's answers at every α, one JSON row each, with spill flag and judge scores when judged."""
    with atomic_file(path, "w") as f:
        for k, (alpha, answers) in enumerate(zip(alphas, sweep.answers)):
            for row, (prompt, answer) in enumerate(zip(evals.prompts, answers)):
                unit = int(evals.units[row])
                record = {"layer": layer, "alpha": alpha, "question_id": evals.ids[unit], "prompt": prompt,
                          "answer": answer, "spill": contains_code(answer)}
                f.write(json.dumps(record | (sweep.judged[k][row] if sweep.judged else {})) + "\n")
