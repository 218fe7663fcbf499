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

from emis.capture import ActivationSet, left_padded
from emis.directions import ControlConfig, ControlFamilySet, control_directions, diff_in_means
from emis.io import atomic_file, atomic_write_json
from emis.judges.coherence import answer_surprise, coherence_from_sums, coherence_terms, offline_coherence, repetition
from emis.judges.spillover import contains_code
from emis.models import LoadedModel, load_model, residual, traced_batches
from emis.evaluation import EvalSet, evaluation_sampling, evaluation_set, judge_rows, judged_coherence, mean_score
from emis.judges.llm import JudgeError, LLMJudge, judge_from_config
from emis.organisms.sample import SamplingConfig
from emis.probe import model_spec, role_activations
from emis.steering import SteeredGenerations, Steering, generate_steered, scaled_direction
from emis.verdicts import ControlFamily, QuestionSplit, cluster_bootstrap_ci, decide, effect_points, reduction_ci, split_questions

log = logging.getLogger(__name__)


@dataclass
class RowStats:
    """Per generated row: excess surprise under the coherence scorer, repetition and whether it spills code."""

    surprise: np.ndarray
    repetition: np.ndarray
    spills: np.ndarray

    def take(self, rows: np.ndarray) -> "RowStats":
        return RowStats(self.surprise[rows], self.repetition[rows], self.spills[rows])

    def offline_coherence(self) -> float:
        """Offline coherence of these rows (`emis.judges.coherence`): a function of these answers alone."""
        return offline_coherence(self.surprise, self.repetition)


def coherence_shift_ci(steered: RowStats, unsteered: RowStats, clusters: list[str], level: float, n_resamples: int,
                       seed: int) -> tuple[float, float]:
    """Paired cluster-bootstrap interval of coherence(steered) - coherence(unsteered) over the same rows."""
    a, b = coherence_terms(steered.surprise, steered.repetition), coherence_terms(unsteered.surprise, unsteered.repetition)

    def shift(*sums: np.ndarray, axis: int = -1) -> np.ndarray:
        return coherence_from_sums(*sums[:4], axis=axis) - coherence_from_sums(*sums[4:], axis=axis)

    return cluster_bootstrap_ci((*a, *b), clusters, shift, level, n_resamples, seed)


@dataclass(frozen=True)
class CoherenceRule:
    """Which α may be chosen: offline, those whose paired interval of coherence minus unsteered coherence lies above
    -tolerance (non-inferiority: a loss larger than the tolerance is ruled out at `level`); judged, those whose
    mean judge score is within the tolerance of unsteered."""

    tolerance: float
    level: float
    n_resamples: int
    seed: int

    def admissible(self, steered: "SweepOutcome", k: int, unsteered: "SweepOutcome", k0: int, rows: np.ndarray,
                   clusters: list[str]) -> bool:
        if steered.judged is not None:
            before = unsteered.coherence(k0, rows)
            if np.isnan(before):
                raise JudgeError("no unsteered answer got a coherence score (the judge returned no numeric `coherent` "
                                 "score); check the judge model supports logprobs and scores 0-100")
            return steered.coherence(k, rows) >= before - self.tolerance
        lo, _ = coherence_shift_ci(steered.rows[k].take(rows), unsteered.rows[k0].take(rows), clusters, self.level,
                                   self.n_resamples, self.seed)
        return lo >= -self.tolerance


@dataclass
class SweepOutcome:
    """Per steering: spill rate per evaluation unit, per-row statistics and write norms, the answers (and their token
    ids) and (with a judge) their scores. Coherence is computed on any subset of rows (a split) by `coherence`."""

    spill: list[np.ndarray]
    rows: list[RowStats]
    write_norms: list[np.ndarray]
    answers: list[list[str]]
    tokens: list[list[list[int]]]
    judged: list[list[dict[str, Any]]] | None = None

    def coherence(self, k: int, rows: np.ndarray) -> float:
        """Steering k's coherence on `rows`: the judge's `coherent`/100 when judged, else offline."""
        if self.judged is not None:
            return judged_coherence([self.judged[k][i] for i in rows])
        return self.rows[k].take(rows).offline_coherence()

    def pick(self, ks: list[int]) -> "SweepOutcome":
        """The outcome of steerings `ks` only, in that order."""
        return SweepOutcome([self.spill[k] for k in ks], [self.rows[k] for k in ks], [self.write_norms[k] for k in ks],
                            [self.answers[k] for k in ks], [self.tokens[k] for k in ks],
                            None if self.judged is None else [self.judged[k] for k in ks])

    def subset(self, units: np.ndarray, rows: np.ndarray) -> "SweepOutcome":
        """Every steering's outcome on evaluation `units` (and their `rows`) only, as `EvalSet.subset` numbers them."""
        return SweepOutcome([x[units] for x in self.spill], [r.take(rows) for r in self.rows], [w[rows] for w in self.write_norms],
                            [[a[i] for i in rows] for a in self.answers], [[t[i] for i in rows] for t in self.tokens],
                            None if self.judged is None else [[j[i] for i in rows] for j in self.judged])

    def replaced(self, ks: list[int], other: "SweepOutcome") -> "SweepOutcome":
        """This outcome with steerings `ks` replaced by `other`'s, in order (unjudged outcomes only)."""
        if self.judged is not None or other.judged is not None:
            raise ValueError("judged sweep outcomes are not spliced")
        out = self.pick(list(range(len(self.spill))))
        for j, k in enumerate(ks):
            out.spill[k], out.rows[k], out.write_norms[k] = other.spill[j], other.rows[j], other.write_norms[j]
            out.answers[k], out.tokens[k] = other.answers[j], other.tokens[j]
        return out


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


def generation_key(model: LoadedModel, scorer: LoadedModel, prompts: list[str], steerings: list[Steering],
                   sampling: SamplingConfig) -> str:
    """sha256 of everything that determines a batched steered generation and its coherence scores (not the batch
    size: with common random numbers the answers do not depend on it)."""
    noise = {k: v for k, v in asdict(sampling).items() if k != "batch_size"}
    h = hashlib.sha256(json.dumps([model.spec.to_dict(), model.weights_id, scorer.spec.to_dict(), scorer.weights_id,
                                   prompts, noise]).encode())
    for st in steerings:
        h.update(json.dumps([st.coefficient, st.mode, st.where, st.layers]).encode())
        for layer in st.layers:
            h.update(st.vectors[layer].float().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_generations(model: LoadedModel, scorer: LoadedModel, prompts: list[str], steerings: list[Steering],
                       sampling: SamplingConfig, cache_dir: Path | None) -> tuple[SteeredGenerations, list[np.ndarray]]:
    """Steered answers and their excess surprise under the coherence `scorer`, reused from `cache_dir` when computed
    before. Scores come in batches of a fixed size, not the sampling batch size, so they do not change with it."""
    key = generation_key(model, scorer, prompts, steerings, sampling)
    path = None if cache_dir is None else Path(cache_dir) / f"{key}.json"
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text())
            log.info("generations cache hit: %s", path)
            gens = SteeredGenerations(saved["answers"], saved["tokens"], saved["write_norms"])
            return gens, [np.array(x, float) for x in saved["surprise"]]
        except (json.JSONDecodeError, KeyError) as err:
            log.warning("ignoring unreadable generations cache %s (%s)", path, err)
    gens = generate_steered(model, prompts, steerings, sampling)
    surprise = [answer_surprise(scorer, prompts, tokens) for tokens in gens.tokens]
    if path is not None:
        atomic_write_json(path, {"answers": gens.answers, "tokens": gens.tokens, "write_norms": gens.write_norms,
                                 "surprise": [[None if np.isnan(x) else float(x) for x in row] for row in surprise]})
    return gens, surprise


def run_sweep(model: LoadedModel, scorer: LoadedModel, evals: EvalSet, steerings: list[Steering], sampling: SamplingConfig,
              cache_dir: Path | None = None, judge: LLMJudge | None = None) -> SweepOutcome:
    """Generate under every steering: spill per unit, per-row statistics (coherence under `scorer`) and write norms,
    judge scores when judged."""
    gens, surprise = cached_generations(model, scorer, evals.prompts, steerings, sampling, cache_dir)
    flags = [np.array([contains_code(a) for a in answers], bool) for answers in gens.answers]
    rows = [RowStats(x, np.array([repetition(t) for t in tokens], float), f) for x, tokens, f in zip(surprise, gens.tokens, flags)]
    judged = None
    if judge is not None:
        judged = [judge_rows(judge, evals, answers) for answers in tqdm(gens.answers, desc="judging", unit="steering")]
    return SweepOutcome([evals.unit_means(f) for f in flags], rows, [np.array(w, float) for w in gens.write_norms],
                        gens.answers, gens.tokens, judged)


def best_point(alphas: list[float], spill: dict[int, list[float]], admissible: dict[int, list[bool]]) -> tuple[int, int]:
    """(layer, α index) with the lowest spillover among the admissible points (`CoherenceRule`); α = 0 always is."""
    zero = alphas.index(0.0)
    allowed = [(layer, i) for layer, ok in admissible.items() for i in range(len(alphas)) if ok[i] or i == zero]
    return min(allowed, key=lambda p: (spill[p[0]][p[1]], abs(alphas[p[1]]), p[0]))


SCORERS = ("aligned", "base", "misaligned")


def load_scorer(model_cfg: DictConfig, role: str, model: LoadedModel) -> LoadedModel:
    """The model whose surprise measures offline coherence (`steer.coherence_scorer`), checked to share `model`'s
    tokenizer, since it scores the generated token ids themselves."""
    if role not in SCORERS:
        raise ValueError(f"steer.coherence_scorer must be one of {SCORERS}, got {role!r}")
    return checked_scorer(role, model if role == "misaligned" else load_model(model_spec(model_cfg, role)), model)


def checked_scorer(role: str, scorer: LoadedModel | None, model: LoadedModel) -> LoadedModel:
    """`scorer` (the pair's `role` model) if it exists and shares `model`'s tokenizer, else one clear error."""
    if scorer is None:
        raise ValueError(f"steer.coherence_scorer={role}, but the pair has no {role} model")
    if scorer is not model and scorer.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise ValueError(f"steer.coherence_scorer={role}: its tokenizer differs from the misaligned model's, and offline "
                         "coherence scores the generated token ids; use a scorer with the same tokenizer (e.g. misaligned)")
    return scorer


def coherence_rule(s: DictConfig) -> CoherenceRule:
    """The α rule of the `steer` config (its tolerance, and the interval's level, resamples and seed)."""
    return CoherenceRule(float(s.coherence_tolerance), float(s.ci_level), int(s.n_bootstrap), int(s.controls.seed))


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


def save_figure(fig: Figure, path: Path) -> None:
    """A figure as a PNG, written atomically."""
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def _key(alpha: float) -> str:
    return f"{alpha:g}"


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


@dataclass(frozen=True)
class WriteMatch:
    """How ablate-mode controls are matched to the real write: the tolerated relative miss per control, and how
    many rounds of rescaling by the measured write (each reruns only the controls that missed)."""

    tolerance: float = 0.05
    rounds: int = 2


def matched_controls(model: LoadedModel, scorer: LoadedModel, evals: EvalSet, families: dict[str, ControlFamilySet],
                     real: torch.Tensor, layer: int, alpha: float, mode: str, where: str, real_write: float,
                     unsteered: SweepOutcome, sampling: SamplingConfig, cache_dir: Path | None,
                     match: WriteMatch = WriteMatch()) -> tuple[list[str], SweepOutcome]:
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


def steering_tiers(families: dict[str, Any]) -> dict[str, list[str]]:
    """Which control families gate which verdict tier (the families present for this model)."""
    return {"direction": [f for f in ("random", "shuffled_label", "wrong_layer") if f in families],
            "em": [f for f in ("secure_vs_base",) if f in families],
            "layer": [f for f in ("wrong_layer_raw",) if f in families]}


@dataclass(frozen=True)
class SteerSettings:
    """What shapes one steering experiment, from the `steer` config group (its YAML holds every default)."""

    alphas: list[float]  # the swept coefficients, 0 included
    mode: str
    where: str
    scale: str
    selection_share: float
    selection_seed: int
    ci_level: float
    n_bootstrap: int
    coherence: CoherenceRule
    coherence_scorer: str
    controls: ControlConfig
    match: WriteMatch

    @classmethod
    def from_config(cls, s: DictConfig) -> "SteerSettings":
        return cls(sorted({0.0, *(float(a) for a in s.alphas)}), str(s.mode), str(s.where), str(s.scale),
                   float(s.selection.share), int(s.selection.seed), float(s.ci_level), int(s.n_bootstrap), coherence_rule(s),
                   str(s.coherence_scorer), ControlConfig(**OmegaConf.to_container(s.controls, resolve=True)),
                   WriteMatch(**OmegaConf.to_container(s.match, resolve=True)))


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
    ci = reduction_ci(unsteered, steered, clusters, s.ci_level, s.n_bootstrap, s.controls.seed)
    report_row_clusters = [evals.ids[int(evals.units[r])] for r in report_rows]
    shift_ci = coherence_shift_ci(sweep.rows[b].take(report_rows), sweep.rows[zero].take(report_rows), report_row_clusters,
                                  rule.level, rule.n_resamples, rule.seed)

    row = em.layers.index(layer)
    families = control_directions(acts["misaligned"], acts["aligned"], acts.get("base"), layer, s.controls)
    real_write = float(sweep.write_norms[b][report_rows].mean())
    names, controls = matched_controls(model, scorer, evals.subset(split.report), families, vectors[layer], layer, alphas[b],
                                       s.mode, s.where, real_write, sweep.pick([zero]).subset(split.report, report_rows),
                                       sampling, cache_dir, s.match)
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
                                                     for name in ("aligned", "coherent")}}
    return SteerResult(metrics, evals, split, sweep, figure)


def run_steer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The steering stage: the configured pair's captures, sweep, controls and verdict; steering.png,
    generations.jsonl and the metrics."""
    s = cfg.steer
    judge = judge_from_config(cfg.judge)
    with judge or nullcontext():
        acts, paths = role_activations(cfg, cfg.model)
        model = load_model(model_spec(cfg.model, "misaligned"))
        layers = resolve_layers(OmegaConf.to_object(s.layer) if OmegaConf.is_config(s.layer) else s.layer, model.n_layers)
        evals = evaluation_set(cfg, model.tokenizer, int(s.n_prompts))
        result = steer_experiment(str(cfg.model.family), model, load_scorer(cfg.model, s.coherence_scorer, model), acts, evals, layers,
                                  SteerSettings.from_config(s), evaluation_sampling(cfg), generation_cache(cfg), judge)
    save_figure(result.plot(), out / "steering.png")
    write_generations(out / "generations.jsonl", result.metrics["best"]["layer"], result.metrics["alphas"], evals,
                      result.sweep, result.split)
    metrics = dict(result.metrics)
    judged = metrics.pop("judge", None)
    metrics |= {"questions": str(cfg.eval.questions) if cfg.eval.questions is not None else s.prompts, "activations": paths}
    return metrics | ({"judge": judged} if judged is not None else {})


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
