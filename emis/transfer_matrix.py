"""Cross-model transfer of EM directions: ridge maps between residual streams, mapped steering, the transfer matrix.

For every ordered pair (donor, receiver): fit a map from the donor's to the receiver's activations on the
same paired questions (each through its own chat template), push the donor's EM direction through the
map's linear part, steer the receiver with it, and judge it against mapped and native controls with the
same rule as within-model steering.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from emis.activations import ActivationSet
from emis.configured import coherence_rule, control_config
from emis.directions import ControlFamilySet, WriteMatch, as_family, diff_in_means, random_directions
from emis.evaluation import EvalSet, SteeringTarget, score_method_counts
from emis.generation import Steering
from emis.judges.llm import LLMJudge
from emis.models import LoadedModel, resolve_layers
from emis.organisms.sample import SamplingConfig
from emis.settings import MAP_KINDS, MapConfig
from emis.stats import ControlFamily, QuestionSplit, decide, effect_points, reduction_ci, split_questions
from emis.sweep import CoherenceRule, SweepOutcome, best_point, run_sweep
from emis.write_matching import matched_controls, measure_controls

log = logging.getLogger(__name__)




@dataclass
class ActivationMap:
    """An affine map Y ~ X @ coef.T + intercept with its held-out fit quality."""

    coef: np.ndarray  # [d_receiver, d_donor]
    intercept: np.ndarray  # [d_receiver]
    alpha: float
    r2: float  # held-out, variance-weighted over receiver dimensions
    cosine: float  # held-out mean cosine between predicted and true receiver activations, both centred on the training mean

    def push(self, direction: torch.Tensor) -> torch.Tensor:
        """A donor direction through the linear part only (directions are differences: the intercept cancels)."""
        return torch.from_numpy(self.coef @ direction.double().numpy()).float()


def fit_map(x: np.ndarray, y: np.ndarray, cfg: MapConfig) -> ActivationMap:
    """Fit donor activations x [N, d_x] to receiver activations y [N, d_y]; score on a seeded held-out split."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"paired activations differ in rows: donor {x.shape[0]}, receiver {y.shape[0]}")
    train, test = train_test_split(np.arange(x.shape[0]), test_size=cfg.test_size, random_state=cfg.seed)
    if cfg.kind == "ridge_cv":
        model = RidgeCV(alphas=list(cfg.alphas)).fit(x[train], y[train])
        alpha = float(model.alpha_)
    elif cfg.kind == "ridge":
        model = Ridge(alpha=cfg.alphas[0]).fit(x[train], y[train])
        alpha = float(cfg.alphas[0])
    else:
        raise ValueError(f"transfer.map.kind must be one of {', '.join(MAP_KINDS)}, got {cfg.kind!r}")
    pred = model.predict(x[test])
    # cosine of centred held-out predictions: raw residuals share a large mean, which alone would give cosines near 1
    centre = y[train].mean(0)
    p_c, y_c = pred - centre, y[test] - centre
    cos = (p_c * y_c).sum(1) / (np.linalg.norm(p_c, axis=1) * np.linalg.norm(y_c, axis=1)).clip(1e-12)
    return ActivationMap(np.asarray(model.coef_), np.asarray(model.intercept_), alpha,
                         float(r2_score(y[test], pred, multioutput="variance_weighted")), float(cos.mean()))


@dataclass
class Receiver:
    """What every pair into one receiver shares: its model, questions and split, unsteered rows and native results."""

    name: str
    model: LoadedModel
    scorer: LoadedModel  # whose surprise measures its answers' offline coherence
    layer: int
    row: int  # index of `layer` among the captured layers
    evals: EvalSet
    split: QuestionSplit
    native: torch.Tensor  # its own EM direction at `layer`, in steering units
    unsteered: np.ndarray  # per unit, report split
    unsteered_outcome: SweepOutcome  # the α = 0 sweep (all questions)
    native_reduction: float
    native_ci: tuple[float, float]
    native_alpha: float
    native_random: dict[tuple[float, float], ControlFamily]  # (α, real write) -> receiver-native random directions there


@dataclass(frozen=True)
class TransferSettings:
    """What shapes the transfer matrix: the `transfer` group, and the steering rules it shares with `steer`."""

    layer: int  # negative counts from the end
    alphas: list[float]  # 0 included
    rescale: str  # native_norm | mapped
    fit_on: list[str]  # the roles whose captures pair the two spaces
    map: MapConfig
    n_mapped_random: int
    n_native_random: int
    seed: int  # the control directions' seed
    bootstrap_seed: int
    mode: str
    where: str
    ci_level: float
    n_bootstrap: int
    selection_share: float
    selection_seed: int
    coherence: CoherenceRule
    match: WriteMatch

    @classmethod
    def from_config(cls, t: DictConfig, s: DictConfig, selection: DictConfig, controls: DictConfig) -> "TransferSettings":
        """From the `transfer` (t), `steer` (s: the steering rules it shares), `selection` and `controls` groups."""
        m, c = t.map, control_config(controls)
        return cls(int(t.layer), sorted({0.0, *(float(a) for a in t.alphas)}), str(t.rescale), [str(r) for r in m.fit_on],
                   MapConfig(str(m.kind), tuple(float(a) for a in m.alphas), float(m.test_size), int(m.seed)),
                   c.n_mapped_random, c.n_native_random, c.seed, int(s.bootstrap_seed),
                   str(s.mode), str(s.where), float(s.ci_level), int(s.n_bootstrap), float(selection.share), int(selection.seed),
                   coherence_rule(s), c.match)


class TransferRun:
    """Pairs into receivers under one set of settings; receivers' unsteered and native results are shared."""

    def __init__(self, settings: TransferSettings, sampling: SamplingConfig, cache_dir: Path | None = None,
                 judge: LLMJudge | None = None):
        self.s, self.sampling, self.cache, self.judge = settings, sampling, cache_dir, judge
        self.alphas = settings.alphas
        self.zero = self.alphas.index(0.0)
        self.seed = settings.seed
        self.rows: dict[str, int] = {}  # per model: the row of its transfer layer among the captured layers
        self.score_methods: Counter[str] = Counter()  # judge scores of every judged sweep by method (logprobs, parsed)

    def layer(self, model: LoadedModel, acts: dict[str, ActivationSet]) -> tuple[int, int]:
        """`transfer.layer` resolved against the model's layers, and its row among the captured layers."""
        layer = resolve_layers(self.s.layer, model.n_layers, "transfer.layer")[0]
        captured = acts["misaligned"].layers
        if layer not in captured:
            raise ValueError(f"transfer.layer={self.s.layer} is layer {layer} of {model.n_layers}, which was not captured "
                             f"(captured: {captured}); set capture.layers to include it")
        return layer, captured.index(layer)

    def _steer(self, model: LoadedModel, scorer: LoadedModel, evals: EvalSet, steerings: list[Steering]) -> SweepOutcome:
        """Steer a receiver on all its questions; these sweeps (whose coherence picks α) go to the judge if any."""
        sweep = run_sweep(model, scorer, evals, steerings, self.sampling, self.cache, self.judge)
        if sweep.judged is not None:
            self.score_methods.update(score_method_counts(sweep.judged))
        return sweep

    def _steering(self, layer: int, v: torch.Tensor, alpha: float) -> Steering:
        return Steering({layer: v}, alpha, mode=self.s.mode, where=self.s.where)

    def _choose(self, evals: EvalSet, split: QuestionSplit, unsteered: SweepOutcome, steered: SweepOutcome) -> int:
        """Index into `alphas` chosen on the selection split (unsteered = α 0, then `steered` holds the others in order)."""
        rows = evals.rows_of(split.select)
        clusters = [evals.ids[int(evals.units[i])] for i in rows]
        rates = [float(unsteered.spill[0][split.select].mean())] + [float(x[split.select].mean()) for x in steered.spill]
        admissible = [True] + [self.s.coherence.admissible(steered, k, unsteered, 0, rows, clusters) for k in range(len(steered.spill))]
        return best_point(self.alphas, {0: rates}, {0: admissible})[1]

    def _ci(self, evals: EvalSet, split: QuestionSplit, before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
        return reduction_ci(before, after, [evals.ids[u] for u in split.report], self.s.ci_level, self.s.n_bootstrap, self.s.bootstrap_seed)

    def _after(self, r: Receiver, sweep: SweepOutcome, b: int) -> np.ndarray:
        return r.unsteered if b == self.zero else sweep.spill[b - 1][r.split.report]

    def controls(self, r: Receiver, families: dict[str, ControlFamilySet], real: torch.Tensor, alpha: float,
                 real_write: float) -> dict[str, ControlFamily]:
        """`families` steered on the receiver's report split at `alpha`, each write-matched to `real_write`."""
        report = r.evals.subset(r.split.report)
        unsteered = r.unsteered_outcome.subset(r.split.report, r.evals.rows_of(r.split.report))
        names, out = matched_controls(r.model, r.scorer, report, families, real, r.layer, alpha, self.s.mode,
                                      self.s.where, real_write, unsteered, self.sampling, self.cache, self.s.match)
        return measure_controls(names, out, r.unsteered)

    def native_random(self, r: Receiver, alpha: float, real_write: float) -> ControlFamily:
        """Receiver-native random directions at `alpha`, write-matched to `real_write` (memoised per receiver)."""
        key = (alpha, real_write)
        if key not in r.native_random:
            fam = {"native_random": as_family(random_directions(r.model.d_model, self.s.n_native_random, self.seed + 1), r.native)}
            r.native_random[key] = self.controls(r, fam, r.native, alpha, real_write)["native_random"]
        return r.native_random[key]

    def receiver(self, name: str, m: SteeringTarget) -> Receiver:
        """Unsteered and native steering in the receiver, α chosen on the selection split, reported on the other."""
        model, scorer, acts, evals = m.model, m.scorer, m.acts, m.evals
        layer, row = self.layer(model, acts)
        native = diff_in_means(acts["misaligned"], acts["aligned"]).layer(layer)
        split = split_questions(evals.ids, self.s.selection_share, self.s.selection_seed)
        sweep = self._steer(model, scorer, evals, [self._steering(layer, native, a) for a in self.alphas])
        unsteered = sweep.pick([self.zero])
        b = self._choose(evals, split, unsteered, sweep.pick([k for k in range(len(self.alphas)) if k != self.zero]))
        before, after = sweep.spill[self.zero][split.report], sweep.spill[b][split.report]
        reduction = effect_points(before, after)
        log.info("%s: native reduction %.1f points at layer %d, α=%g (report split)", name, reduction, layer, self.alphas[b])
        self.rows[name] = row
        return Receiver(name, model, scorer, layer, row, evals, split, native, before, unsteered, reduction,
                        self._ci(evals, split, before, after), self.alphas[b], {})

    def pair(self, donor: str, donor_acts: dict[str, ActivationSet], r: Receiver, receiver_acts: dict[str, ActivationSet]) -> dict[str, Any]:
        """Map the donor's direction into the receiver, steer with it, and judge it against write-matched mapped and
        native controls at the pair's own α (chosen on the selection split), everything reported on the report split."""
        d_em = diff_in_means(donor_acts["misaligned"], donor_acts["aligned"])
        d_row = self.rows[donor]
        # Paired rows: the same questions through the donor's and the receiver's models of `transfer.map.fit_on`.
        # Fitting on rows that hold both sides of the EM contrast would let the map learn the receiver's own
        # contrast, and any donor direction would come out as the receiver's native one.
        roles = self.s.fit_on
        missing = [k for k in roles if k not in donor_acts or k not in receiver_acts]
        if missing:
            raise ValueError(f"transfer.map.fit_on names {missing}, which the pair {donor} -> {r.name} does not have "
                             "(model.base: null?); fit on roles both pairs hold, e.g. transfer.map.fit_on=[aligned]")
        x = np.concatenate([donor_acts[k].activations[:, d_row].double().numpy() for k in roles])
        y = np.concatenate([receiver_acts[k].activations[:, r.row].double().numpy() for k in roles])
        fitted = fit_map(x, y, self.s.map)
        raw = fitted.push(d_em.vectors[d_row])
        norm = r.native.norm() if self.s.rescale == "native_norm" else raw.norm()
        mapped = raw / raw.norm().clamp_min(1e-12) * norm
        steered = [a for a in self.alphas if a != 0.0]
        sweep = self._steer(r.model, r.scorer, r.evals, [self._steering(r.layer, mapped, a) for a in steered])
        b = self._choose(r.evals, r.split, r.unsteered_outcome, sweep)
        after = self._after(r, sweep, b)
        reduction, ci = effect_points(r.unsteered, after), self._ci(r.evals, r.split, r.unsteered, after)
        alpha = self.alphas[b]
        families = {
            "mapped_random": as_family(torch.stack([fitted.push(v) for v in random_directions(x.shape[1], self.s.n_mapped_random, self.seed)]), mapped),
            "mapped_wrong_layer": as_family(torch.stack([fitted.push(d_em.vectors[i]) for i in range(len(d_em.layers)) if i != d_row]), mapped),
        }
        report_rows = r.evals.rows_of(r.split.report)
        real_write = 0.0 if b == self.zero else float(sweep.write_norms[b - 1][report_rows].mean())
        measured = self.controls(r, families, mapped, alpha, real_write)
        for name, fam in families.items():
            measured[name].cosine_to_real = [float(c) for c in fam.raw_cosine]
        measured["native_random"] = self.native_random(r, alpha, real_write)
        tiers = {"direction": ["mapped_random", "native_random"]}
        verdicts = decide(reduction, ci, {n: m.effects for n, m in measured.items()}, tiers)
        log.info("%s -> %s: R² %.3f, reduction %.1f points (CI %.1f..%.1f): %s", donor, r.name, fitted.r2, reduction, *ci, verdicts.verdict)
        return {
            "donor": donor, "receiver": r.name, "r2": fitted.r2, "cosine": fitted.cosine, "ridge_alpha": fitted.alpha,
            "cosine_to_native": float(torch.nn.functional.cosine_similarity(mapped, r.native, dim=0)),
            "alpha": alpha, "layer": r.layer, "selection": r.split.to_dict(), "reduction_points": reduction, "ci95": list(ci),
            "controls": {n: m.to_dict() for n, m in measured.items()},
            "delta_norm": {"real": real_write, "controls": {n: m.write_norms for n, m in measured.items() if m.write_norms}},
            "p_values": verdicts.p_values, "p_holm": verdicts.p_holm, "tiers": tiers,
            "verdicts": verdicts.to_dict(), "verdict": verdicts.verdict,
        }


def plot_matrix(names: list[str], pairs: list[dict[str, Any]], native: dict[str, float]) -> Figure:
    """Heatmap of suppression (points) donor x receiver; the diagonal holds native steering; * marks `specific`."""
    grid = np.full((len(names), len(names)), np.nan)
    for name in names:
        grid[names.index(name), names.index(name)] = native[name]
    for p in pairs:
        grid[names.index(p["donor"]), names.index(p["receiver"])] = p["reduction_points"]
    fig = Figure(figsize=(5.8, 4.8), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="viridis", vmin=min(0.0, np.nanmin(grid)), vmax=max(1.0, np.nanmax(grid)))
    fig.colorbar(im, ax=ax, label="spillover reduction (points)")
    marks = {(p["donor"], p["receiver"]): p["verdict"] == "specific" for p in pairs}
    for i, d in enumerate(names):
        for j, r in enumerate(names):
            text = f"{grid[i, j]:.0f}" + ("*" if marks.get((d, r)) else "") + (" (native)" if i == j else "")
            ax.text(j, i, text, ha="center", va="center", color="w", fontsize=8)
    ax.set(xticks=range(len(names)), xticklabels=names, yticks=range(len(names)), yticklabels=names,
           xlabel="receiver", ylabel="donor", title="Transfer of EM directions (* = specific)")
    return fig


@dataclass
class TransferResult:
    """The transfer matrix: its `metrics.json` fields (`to_dict`) and its heatmap (`plot`)."""

    metrics: dict[str, Any]

    @property
    def pairs(self) -> list[dict[str, Any]]:
        return self.metrics["pairs"]

    def to_dict(self) -> dict[str, Any]:
        return self.metrics

    def plot(self) -> Figure:
        m = self.metrics
        return plot_matrix(m["models"], m["pairs"], {n: v["reduction_points"] for n, v in m["native"].items()})


def transfer_matrix(models: Mapping[str, SteeringTarget], settings: TransferSettings, sampling: SamplingConfig,
                    cache_dir: Path | None = None, judge: LLMJudge | None = None, self_check: bool = False) -> TransferResult:
    """Every ordered pair of `models` (donor -> receiver), with donor/receiver scores; `self_check` also maps each
    model onto itself, which must recover its native direction and suppression: a check of the whole path."""
    names = list(models)
    if len(names) < 2:
        raise ValueError("transfer needs at least two models")
    run = TransferRun(settings, sampling, cache_dir, judge)
    receivers = {n: run.receiver(n, models[n]) for n in names}
    pairs = [run.pair(d, models[d].acts, receivers[r], models[r].acts) for d, r in permutations(names, 2)]
    self_pairs = [run.pair(n, models[n].acts, receivers[n], models[n].acts) for n in names] if self_check else []
    donor_score = {n: float(np.mean([p["reduction_points"] for p in pairs if p["donor"] == n])) for n in names}
    receiver_score = {n: float(np.mean([p["reduction_points"] for p in pairs if p["receiver"] == n])) for n in names}
    by_pair = {(p["donor"], p["receiver"]): p["reduction_points"] for p in pairs}
    return TransferResult({
        "models": names,
        "pairs": pairs,
        "donor_score": donor_score,
        "receiver_score": receiver_score,
        "donor_ranking": sorted(names, key=lambda n: -donor_score[n]),
        "receiver_ranking": sorted(names, key=lambda n: -receiver_score[n]),
        "asymmetry": [{"a": a, "b": b, "a_to_b_minus_b_to_a": by_pair[(a, b)] - by_pair[(b, a)]}
                      for i, a in enumerate(names) for b in names[i + 1 :]],
        "native": {n: {"reduction_points": r.native_reduction, "ci95": list(r.native_ci), "alpha": r.native_alpha,
                       "layer": r.layer, "unsteered_spillover": float(r.unsteered.mean()), "selection": r.split.to_dict()}
                   for n, r in receivers.items()},
        "self_transfer": self_pairs,
        **({"judge": {"model": judge.cfg.model, "score_methods": dict(sorted(run.score_methods.items()))}} if judge else {}),
    })
