"""Per-layer separation of misaligned from aligned activations on held-out rows, with bootstrap intervals.

Per layer, on one seeded stratified train/held-out split shared by all layers:
- projection accuracy: project on the unit difference-in-means direction of the *train* rows; the threshold is
  the midpoint of the two train class means of that projection (no tuning, so nothing overfits the train rows);
  held-out rows above it are called misaligned.
- AUROC of the held-out projections (threshold-free).
- probe accuracy: standardised features, logistic regression with C chosen by stratified k-fold CV (log loss) on
  the train rows, scored on the held-out rows.
Intervals: percentile bootstrap over held-out rows, resampled within each class so both classes are always present.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emis.activations import ActivationSet
from emis.settings import SeparationConfig
from emis.stats import auroc, bootstrap_ci, pooled_mean


@dataclass
class SeparationResult:
    """Metrics per layer (lists aligned with `layers`), each with a (low, high) bootstrap interval."""

    layers: list[int]
    accuracy: list[float]
    accuracy_ci: list[tuple[float, float]]
    auroc: list[float]
    auroc_ci: list[tuple[float, float]]
    probe_accuracy: list[float]
    probe_accuracy_ci: list[tuple[float, float]]
    threshold: list[float]  # on the unit-direction projection
    probe_c: list[float]  # inverse regularisation strength the probe's CV chose
    n_train: int
    n_test: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {k: [list(v) for v in val] if k.endswith("_ci") else val for k, val in asdict(self).items()}

    def plot(self, control: "SeparationResult | None" = None) -> Figure:
        """Every metric against layer with its interval shaded; `control` dashed beside it (`plot_separation`)."""
        return plot_separation(self, control)


def heldout_split(y: np.ndarray, test_size: float, seed: int, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices: whole groups (a question's misaligned and aligned rows) go to one side
    when `groups` is given, else a stratified split of the rows."""
    if groups is None:
        train, test = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed)
    else:
        train, test = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(y, y, groups))
    return np.sort(train), np.sort(test)


def separate_arrays(x: np.ndarray, y: np.ndarray, layers: list[int], cfg: SeparationConfig,
                    groups: np.ndarray | None = None) -> SeparationResult:
    """Separation metrics for activations x [N, L, d] with labels y [N] (1 = misaligned, 0 = aligned); rows of one
    group (e.g. the same question through both models) stay together in the held-out split and the probe's folds."""
    y = np.asarray(y).astype(int)
    if x.ndim != 3 or x.shape[0] != len(y) or x.shape[1] != len(layers):
        raise ValueError(f"x {list(x.shape)} does not fit {len(y)} labels x {len(layers)} layers x d")
    if len(set(y.tolist())) < 2:
        raise ValueError("separation needs both classes (misaligned and aligned rows); only one was given")
    if not np.isfinite(x).all():
        raise ValueError("activations contain NaN or inf; recapture them (delete the cached capture)")
    train, test = heldout_split(y, cfg.test_size, cfg.seed, groups)
    y_tr, y_te = y[train], y[test]
    smallest = min(np.bincount(y_tr, minlength=2))
    if smallest < cfg.cv_folds or min(np.bincount(y_te, minlength=2)) < 1:
        raise ValueError(f"too few rows: each class needs >= {cfg.cv_folds} train rows (cv_folds) and >= 1 held-out row")
    pos_te = y_te == 1

    def interval(statistic, values: np.ndarray) -> tuple[float, float]:
        """Stratified bootstrap (each class resampled within itself) of a statistic of held-out positives, negatives."""
        return bootstrap_ci((values[pos_te], values[~pos_te]), statistic, cfg.ci_level, cfg.n_bootstrap, cfg.seed)

    folds = (StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed) if groups is None else
             list(StratifiedGroupKFold(cfg.cv_folds, shuffle=True, random_state=cfg.seed).split(train, y_tr, groups[train])))
    out: dict[str, list] = {k: [] for k in ("accuracy", "accuracy_ci", "auroc", "auroc_ci", "probe_accuracy",
                                            "probe_accuracy_ci", "threshold", "probe_c")}
    for li in range(len(layers)):
        xl = x[:, li].astype(np.float64)
        v = xl[train][y_tr == 1].mean(0) - xl[train][y_tr == 0].mean(0)
        norm = np.linalg.norm(v)
        s = xl @ (v / norm if norm > 0 else v)
        threshold = (s[train][y_tr == 1].mean() + s[train][y_tr == 0].mean()) / 2
        correct = (s[test] > threshold).astype(int) == y_te
        probe = make_pipeline(
            StandardScaler(),
            LogisticRegressionCV(
                cv=folds, scoring="neg_log_loss",
                l1_ratios=(0.0,), use_legacy_attributes=False, max_iter=1000,
            ),
        ).fit(xl[train], y_tr)
        probe_correct = probe.predict(xl[test]) == y_te
        out["accuracy"].append(float(correct.mean()))
        out["accuracy_ci"].append(interval(pooled_mean, correct))
        out["auroc"].append(float(roc_auc_score(y_te, s[test])))
        out["auroc_ci"].append(interval(auroc, s[test]))
        out["probe_accuracy"].append(float(probe_correct.mean()))
        out["probe_accuracy_ci"].append(interval(pooled_mean, probe_correct))
        out["threshold"].append(float(threshold))
        out["probe_c"].append(float(np.ravel(probe[-1].C_)[0]))
    return SeparationResult(layers=list(layers), n_train=len(train), n_test=len(test), config=asdict(cfg), **out)


def separation(misaligned: ActivationSet, aligned: ActivationSet, cfg: SeparationConfig) -> SeparationResult:
    """Separation metrics of two activation sets captured at the same layers and position."""
    if misaligned.layers != aligned.layers or misaligned.position != aligned.position:
        raise ValueError("misaligned and aligned activations must share layers and position")
    x = np.concatenate([misaligned.activations.numpy(), aligned.activations.numpy()])
    n_mis, n_al = len(misaligned.prompts), len(aligned.prompts)
    y = np.r_[np.ones(n_mis, int), np.zeros(n_al, int)]
    # Captures of one question set, row i the same question on both sides: that question's two rows are one group.
    groups = np.r_[np.arange(n_mis), np.arange(n_al)] if n_mis == n_al else None
    return separate_arrays(x, y, misaligned.layers, cfg, groups)


METRICS = (("accuracy", "projection accuracy"), ("auroc", "AUROC"), ("probe_accuracy", "logistic probe accuracy"))


def plot_separation(
    result: SeparationResult, control: SeparationResult | None = None, labels: tuple[str, str] = ("EM contrast", "control"),
) -> Figure:
    """PNG of every metric against layer: the EM contrast solid with its intervals shaded, the control dashed."""
    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for color, (key, name) in zip(("C0", "C1", "C2"), METRICS):
        ci = np.array(getattr(result, f"{key}_ci"))
        ax.plot(result.layers, getattr(result, key), "-o", color=color, ms=3, label=f"{name} ({labels[0]})")
        ax.fill_between(result.layers, ci[:, 0], ci[:, 1], color=color, alpha=0.15, lw=0)
        if control is not None:
            ax.plot(control.layers, getattr(control, key), "--", color=color, label=f"{name} ({labels[1]})")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="decoder layer (residual output)", ylabel="held-out score", ylim=(0.0, 1.02),
           xticks=result.layers, title="Separation of misaligned vs aligned activations")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
