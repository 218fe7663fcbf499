"""Cross-model transfer of EM directions: ridge maps between residual streams, mapped steering, the transfer matrix.

For every ordered pair (donor, receiver): fit a map from the donor's to the receiver's activations on the
same paired questions (each through its own chat template), push the donor's EM direction through the
map's linear part, steer the receiver with it, and judge it against mapped and native controls with the
same rule as within-model steering.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from emis.capture import ActivationSet
from emis.directions import diff_in_means, random_directions
from emis.evaluation import EvalSet, evaluation_sampling, evaluation_set
from emis.io import atomic_file
from emis.judges.llm import LLMJudge, judge_from_config
from emis.models import LoadedModel, load_model
from emis.probe import model_spec, role_activations
from emis.specificity import effect_points, effects_by_family, paired_bootstrap_ci, summarise_controls, verdict
from emis.steer import Reference, SweepOutcome, best_point, generation_cache, resolve_layers, run_sweep
from emis.steering import Steering

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapConfig:
    """How the donor -> receiver map is fitted (owned by `conf/transfer/`)."""

    kind: str  # ridge_cv: RidgeCV over `alphas` | ridge: Ridge at alphas[0]
    alphas: tuple[float, ...]
    test_size: float
    seed: int


@dataclass
class ActivationMap:
    """An affine map Y ~ X @ coef.T + intercept with its held-out fit quality."""

    coef: np.ndarray  # [d_receiver, d_donor]
    intercept: np.ndarray  # [d_receiver]
    alpha: float
    r2: float  # held-out, variance-weighted over receiver dimensions
    cosine: float  # held-out mean cosine between predicted and true receiver activations

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
        raise ValueError(f"transfer.map.kind must be 'ridge_cv' or 'ridge', got {cfg.kind!r}")
    pred = model.predict(x[test])
    cos = (pred * y[test]).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(y[test], axis=1)).clip(1e-12)
    return ActivationMap(np.asarray(model.coef_), np.asarray(model.intercept_), alpha,
                         float(r2_score(y[test], pred, multioutput="variance_weighted")), float(cos.mean()))


@dataclass
class Receiver:
    """What every pair into one receiver shares: its model, prompts, unsteered answers and native results."""

    name: str
    model: LoadedModel
    layer: int
    evals: EvalSet
    native: torch.Tensor  # its own EM direction at `layer`
    unsteered: np.ndarray
    unsteered_coherence: float
    reference: Reference
    native_reduction: float
    native_ci: tuple[float, float]
    native_alpha: float
    random_effects: list[float]  # receiver-native random directions at the native norm


class TransferRun:
    """The configured stage: steering settings, map settings and every model's captures."""

    def __init__(self, cfg: DictConfig, judge: LLMJudge | None = None):
        self.cfg, self.t, self.steer, self.judge = cfg, cfg.transfer, cfg.steer, judge
        self.sampling = evaluation_sampling(cfg, int(self.t.max_new_tokens))
        m = self.t.map
        self.map_cfg = MapConfig(m.kind, tuple(float(a) for a in m.alphas), float(m.test_size), int(m.seed))
        self.alphas = sorted({0.0, *(float(a) for a in self.t.alphas)})
        self.seed = int(self.t.controls.seed)
        self.cache = generation_cache(cfg)

    def activations(self, name: str) -> dict[str, ActivationSet]:
        """The three roles' captures of one configured model on the paired (probe) questions, cached."""
        return role_activations(self.cfg, self.cfg.models[name])[0]

    def layer(self, acts: dict[str, ActivationSet]) -> int:
        return resolve_layers(int(self.t.layer), len(acts["misaligned"].layers))[0]

    def _steer(self, model: LoadedModel, layer: int, evals: EvalSet, vectors: list[torch.Tensor],
               alphas: list[float], reference: Reference | None, judged: bool = False) -> tuple[SweepOutcome, Reference]:
        """Steer with every vector at every α; `judged` sweeps (whose coherence picks α) go to the judge when there is one."""
        steerings = [Steering({layer: v}, a, mode=self.steer.mode, where=self.steer.where) for v in vectors for a in alphas]
        return run_sweep(model, evals, steerings, self.sampling, reference, self.cache, self.judge if judged else None)

    def _ci(self, before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
        return paired_bootstrap_ci(before, after, int(self.steer.n_bootstrap), self.seed, float(self.steer.ci_level))

    def receiver(self, name: str, acts: dict[str, ActivationSet]) -> Receiver:
        """Unsteered and native steering in the receiver, and its native random controls."""
        model = load_model(model_spec(self.cfg.models[name], "misaligned"))
        layer = self.layer(acts)
        native = diff_in_means(acts["misaligned"], acts["aligned"]).layer(layer)
        evals = evaluation_set(self.cfg, model.tokenizer, int(self.t.n_prompts))
        sweep, reference = self._steer(model, layer, evals, [native], self.alphas, None, judged=True)
        rates = [float(s.mean()) for s in sweep.spill]
        _, b = best_point(self.alphas, {layer: rates}, {layer: sweep.coherence}, float(self.steer.coherence_tolerance))
        zero = self.alphas.index(0.0)
        unsteered = sweep.spill[zero]
        rand = random_directions(model.d_model, int(self.t.controls.n_native_random), self.seed + 1) * native.norm()
        rand_out, _ = self._steer(model, layer, evals, list(rand), [self.alphas[b]], reference)
        reduction = effect_points(unsteered, sweep.spill[b])
        log.info("%s: native reduction %.1f points at layer %d, α=%g", name, reduction, layer, self.alphas[b])
        return Receiver(name, model, layer, evals, native, unsteered, sweep.coherence[zero], reference, reduction,
                        self._ci(unsteered, sweep.spill[b]), self.alphas[b], [effect_points(unsteered, s) for s in rand_out.spill])

    def pair(self, donor: str, donor_acts: dict[str, ActivationSet], r: Receiver, receiver_acts: dict[str, ActivationSet]) -> dict[str, Any]:
        """Map the donor's direction into the receiver, steer with it, and judge it against mapped and native controls."""
        d_em = diff_in_means(donor_acts["misaligned"], donor_acts["aligned"])
        d_row = d_em.layers.index(self.layer(donor_acts))
        r_row = receiver_acts["misaligned"].layers.index(r.layer)
        # Paired rows: the same questions through the donor's and the receiver's models of `transfer.map.fit_on`.
        # Fitting on rows that hold both sides of the EM contrast would let the map learn the receiver's own
        # contrast, and any donor direction would come out as the receiver's native one.
        roles = list(self.t.map.fit_on)
        x = np.concatenate([donor_acts[k].activations[:, d_row].double().numpy() for k in roles])
        y = np.concatenate([receiver_acts[k].activations[:, r_row].double().numpy() for k in roles])
        fitted = fit_map(x, y, self.map_cfg)
        raw = fitted.push(d_em.vectors[d_row])
        norm = r.native.norm() if self.t.rescale == "native_norm" else raw.norm()

        def scaled(v: torch.Tensor) -> torch.Tensor:
            return v / v.norm().clamp_min(1e-12) * norm

        mapped = scaled(raw)
        steered = [a for a in self.alphas if a != 0.0]
        sweep, _ = self._steer(r.model, r.layer, r.evals, [mapped], steered, r.reference, judged=True)
        rates = [float(r.unsteered.mean())] + [float(s.mean()) for s in sweep.spill]
        _, b = best_point(self.alphas, {0: rates}, {0: [r.unsteered_coherence] + sweep.coherence}, float(self.steer.coherence_tolerance))
        after = r.unsteered if b == 0 else sweep.spill[b - 1]
        reduction, ci = effect_points(r.unsteered, after), self._ci(r.unsteered, after)
        mapped_controls = {
            "mapped_random": [fitted.push(v) for v in random_directions(x.shape[1], int(self.t.controls.n_mapped_random), self.seed)],
            "mapped_wrong_layer": [fitted.push(d_em.vectors[i]) for i in range(len(d_em.layers)) if i != d_row],
        }
        flat = [(fam, scaled(v)) for fam, vs in mapped_controls.items() for v in vs]
        ctrl_out, _ = self._steer(r.model, r.layer, r.evals, [v for _, v in flat], [self.alphas[b]], r.reference)
        effects = effects_by_family([fam for fam, _ in flat], r.unsteered, ctrl_out.spill)
        effects["native_random"] = r.random_effects
        summaries = summarise_controls(reduction, effects)
        result = verdict(reduction, ci, summaries)
        log.info("%s -> %s: R² %.3f, reduction %.1f points (CI %.1f..%.1f): %s", donor, r.name, fitted.r2, reduction, *ci, result)
        return {
            "donor": donor, "receiver": r.name, "r2": fitted.r2, "cosine": fitted.cosine, "ridge_alpha": fitted.alpha,
            "cosine_to_native": float(torch.nn.functional.cosine_similarity(mapped, r.native, dim=0)),
            "alpha": self.alphas[b], "reduction_points": reduction, "ci95": list(ci),
            "controls": {fam: c.to_dict() for fam, c in summaries.items()}, "verdict": result,
        }


def plot_matrix(path: Path, names: list[str], pairs: list[dict[str, Any]], native: dict[str, float]) -> None:
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
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def run_transfer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The transfer matrix over every ordered pair of `transfer.models`, with donor/receiver scores."""
    names = list(cfg.transfer.models)
    if len(names) < 2:
        raise ValueError("transfer.models needs at least two models")
    unknown = [n for n in names if n not in cfg.models]
    if unknown:
        raise ValueError(f"transfer.models names {unknown}, not configured under `models` ({list(cfg.models)})")
    judge = judge_from_config(cfg.judge)
    with judge or nullcontext():
        run = TransferRun(cfg, judge)
        acts = {n: run.activations(n) for n in names}
        receivers = {n: run.receiver(n, acts[n]) for n in names}
        pairs = [run.pair(d, acts[d], receivers[r], acts[r]) for d, r in permutations(names, 2)]
        # A model mapped onto itself must recover its native direction and suppression: a check of the whole path.
        self_pairs = [run.pair(n, acts[n], receivers[n], acts[n]) for n in names] if cfg.transfer.self_check else []
    native = {n: r.native_reduction for n, r in receivers.items()}
    plot_matrix(out / "transfer_matrix.png", names, pairs, native)
    donor_score = {n: float(np.mean([p["reduction_points"] for p in pairs if p["donor"] == n])) for n in names}
    receiver_score = {n: float(np.mean([p["reduction_points"] for p in pairs if p["receiver"] == n])) for n in names}
    by_pair = {(p["donor"], p["receiver"]): p["reduction_points"] for p in pairs}
    return {
        "models": names,
        "pairs": pairs,
        "donor_score": donor_score,
        "receiver_score": receiver_score,
        "donor_ranking": sorted(names, key=lambda n: -donor_score[n]),
        "receiver_ranking": sorted(names, key=lambda n: -receiver_score[n]),
        "asymmetry": [{"a": a, "b": b, "a_to_b_minus_b_to_a": by_pair[(a, b)] - by_pair[(b, a)]}
                      for i, a in enumerate(names) for b in names[i + 1 :]],
        "native": {n: {"reduction_points": r.native_reduction, "ci95": list(r.native_ci), "alpha": r.native_alpha,
                       "layer": r.layer, "unsteered_spillover": float(r.unsteered.mean())} for n, r in receivers.items()},
        "self_transfer": self_pairs,
    }
