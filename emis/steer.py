"""The steering stage: subtract the EM direction while the misaligned model answers, against matched controls.

Directions come from the probe stage's (cached) captures on the probe questions; spillover is measured
on the evaluation questions, which the direction never saw. Every coefficient of the sweep, then
every control direction at the chosen coefficient, runs as rows of batched generate calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from emis.directions import ControlConfig, control_directions, diff_in_means
from emis.io import atomic_file, atomic_write_json
from emis.judges.coherence import answer_logprobs, offline_coherence, repetition
from emis.judges.spillover import contains_code
from emis.models import LoadedModel, load_model
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.probe import model_spec, organism_questions, role_activations
from emis.specificity import ControlSummary, effect_points, effects_by_family, paired_bootstrap_ci, summarise_controls, verdict
from emis.steering import SteeredGenerations, Steering, generate_steered, scaled_direction

log = logging.getLogger(__name__)


Reference = tuple[np.ndarray, list[float], list[bool]]  # unsteered answers' log-likelihoods, repetition, code flags


@dataclass
class SweepOutcome:
    """Per steering: spill flags [n_prompts] (mean over samples), coherence, and the answers."""

    spill: list[np.ndarray]
    coherence: list[float]
    answers: list[list[str]]


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


def evaluation_prompts(cfg: DictConfig, model: LoadedModel, n_prompts: int) -> list[str]:
    """Chat-templated evaluation questions, each repeated samples_per_prompt times (consecutively)."""
    s = cfg.steer
    questions = organism_questions(cfg, s.prompts, n_prompts, int(s.prompt_seed))
    return [chat_prompt(model.tokenizer, q) for q in questions for _ in range(int(s.samples_per_prompt))]


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


def run_sweep(model: LoadedModel, prompts: list[str], steerings: list[Steering], sampling: SamplingConfig,
              samples: int, reference: Reference | None, cache_dir: Path | None = None) -> tuple[SweepOutcome, Reference]:
    """Generate under every steering; spill per prompt and offline coherence against `reference` (default: the first steering)."""
    gens, logprobs = cached_generations(model, prompts, steerings, sampling, cache_dir)
    flags = [[contains_code(a) for a in answers] for answers in gens.answers]
    spill = [np.array(f, float).reshape(-1, samples).mean(1) for f in flags]
    stats = [(lp, [repetition(t) for t in tokens], f) for lp, tokens, f in zip(logprobs, gens.tokens, flags)]
    ref = reference or stats[0]
    coherence = [offline_coherence(*st, *ref) for st in stats]
    return SweepOutcome(spill, coherence, gens.answers), ref


def best_point(alphas: list[float], spill: dict[int, list[float]], coherence: dict[int, list[float]], tolerance: float) -> tuple[int, int]:
    """(layer, α index) with the lowest spillover whose coherence is within `tolerance` of unsteered (α = 0)."""
    zero = alphas.index(0.0)
    allowed = [(layer, i) for layer, cs in coherence.items() for i, c in enumerate(cs) if c >= cs[zero] - tolerance]
    return min(allowed, key=lambda p: (spill[p[0]][p[1]], abs(alphas[p[1]]), p[0]))


def plot_steering(path: Path, alphas: list[float], spill: list[float], coherence: list[float], best: int,
                  controls: dict[str, list[float]], title: str) -> None:
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
    twin.set(ylabel="offline coherence (unsteered = 1)", ylim=(0, 1.3))
    lines = ax.get_legend_handles_labels()
    tl = twin.get_legend_handles_labels()
    ax.legend(lines[0] + tl[0], lines[1] + tl[1], fontsize=7, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def _key(alpha: float) -> str:
    return f"{alpha:g}"


def run_steer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Coefficient sweep of the EM direction at each configured layer, then controls at the best (layer, α)."""
    s = cfg.steer
    acts, paths = role_activations(cfg, cfg.model)
    model = load_model(model_spec(cfg.model, "misaligned"))
    layers = resolve_layers(OmegaConf.to_object(s.layer) if OmegaConf.is_config(s.layer) else s.layer, model.n_layers)
    em = diff_in_means(acts["misaligned"], acts["aligned"])
    residual_norms = acts["misaligned"].activations.norm(dim=-1).mean(0)
    vectors = {layer: scaled_direction(em.layer(layer), s.scale, float(residual_norms[em.layers.index(layer)])) for layer in layers}
    alphas = sorted({0.0, *(float(a) for a in s.alphas)})
    sampling = SamplingConfig(**OmegaConf.to_container(s.sampling, resolve=True))
    prompts = evaluation_prompts(cfg, model, int(s.n_prompts))
    samples = int(s.samples_per_prompt)
    cache = generation_cache(cfg)

    def steering(layer: int, v: torch.Tensor, alpha: float) -> Steering:
        return Steering({layer: v}, alpha, mode=s.mode, where=s.where)

    sweeps: dict[int, SweepOutcome] = {}
    reference = None
    for layer in layers:
        sweeps[layer], reference = run_sweep(model, prompts, [steering(layer, vectors[layer], a) for a in alphas], sampling, samples, reference, cache)
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
    controls, _ = run_sweep(model, prompts, [steering(layer, v, alphas[b]) for _, v in flat], sampling, samples, reference, cache)
    names = [family for family, _ in flat]
    effects = effects_by_family(names, unsteered, controls.spill)
    control_spill: dict[str, list[float]] = {family: [] for family in families}
    for family, spill in zip(names, controls.spill):
        control_spill[family].append(float(spill.mean()))
    summaries: dict[str, ControlSummary] = summarise_controls(reduction, effects)
    result = verdict(reduction, ci, summaries)

    plot_steering(out / "steering.png", alphas, rates[layer], coherence[layer], b, control_spill,
                  f"Steering {cfg.model.family} at layer {layer} ({s.mode}, {s.scale} units): {result}")
    with atomic_file(out / "generations.jsonl", "w") as f:
        for alpha, answers in zip(alphas, sweep.answers):
            for prompt, answer in zip(prompts, answers):
                f.write(json.dumps({"layer": layer, "alpha": alpha, "prompt": prompt, "answer": answer,
                                    "spill": contains_code(answer)}) + "\n")
    log.info("layer %d: spillover %.3f -> %.3f at α=%g (%.1f points, CI %.1f..%.1f): %s",
             layer, rates[layer][alphas.index(0.0)], rates[layer][b], alphas[b], reduction, ci[0], ci[1], result)
    return {
        "model": cfg.model.family,
        "layers": layers,
        "mode": s.mode, "where": s.where, "scale": s.scale,
        "alphas": alphas,
        "spillover": {_key(a): r for a, r in zip(alphas, rates[layer])},
        "coherence": {_key(a): c for a, c in zip(alphas, coherence[layer])},
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
        "n_prompts": len(prompts) // samples, "samples_per_prompt": samples,
        "activations": paths,
    }
