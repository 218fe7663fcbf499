"""Calibrated verdicts for steering and transfer alike (STATS.md): a selection / report split of the questions,
cluster-paired BCa intervals, empirical one-sided p-values against control families, Holm within each tier,
and tiered verdicts.

Tiers: `direction_specific` (beats the random, orthogonalised shuffled-label and orthogonalised other-layer
families), `em_specific` (beats the secure-vs-base family) and `layer_localised` (beats the raw other-layer
directions; descriptive). `specific` = direction- and EM-specific, an intersection-union test: each tier is
a level-5% test, so their conjunction is too without a correction across tiers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats
from scipy.stats import rankdata

from emis.settings import SelectionConfig  # noqa: F401  (exported here too)

SPECIFIC, NOT_SPECIFIC = "specific", "not specific"
ALPHA = 0.05  # the level of every tier
MIN_GATING_MEMBERS = 19  # with 19 nulls, p = 1/20 = 0.05 is reachable
_EPS = 1e-12  # float slack in p <= alpha (3 * 1/60 is 0.05 in exact arithmetic)


@dataclass(frozen=True)
class QuestionSplit:
    """Evaluation units (questions) split once, by cluster: (layer, α) is chosen on `select`, everything
    reported is measured on `report`."""

    select: np.ndarray
    report: np.ndarray
    seed: int

    def to_dict(self) -> dict[str, int]:
        return {"n_select": int(self.select.size), "n_report": int(self.report.size), "seed": self.seed}


def split_questions(clusters: Sequence[str], select_fraction: float, seed: int) -> QuestionSplit:
    """A seeded split of unit indices that keeps every cluster (e.g. the paraphrases of one study id) whole."""
    if not 0 < select_fraction < 1:
        raise ValueError(f"the selection share must lie strictly between 0 and 1, got {select_fraction}")
    names = sorted(set(clusters))
    if len(names) < 4:
        raise ValueError(f"{len(names)} question clusters cannot be split into selection and report parts; give at least 4 questions")
    order = np.random.default_rng(seed).permutation(len(names))
    n_select = min(max(1, round(select_fraction * len(names))), len(names) - 1)
    chosen = {names[i] for i in order[:n_select]}
    units = np.arange(len(clusters))
    picked = np.array([c in chosen for c in clusters])
    return QuestionSplit(units[picked], units[~picked], seed)


def effect_points(before: np.ndarray, after: np.ndarray) -> float:
    """Reduction of a rate in percentage points: 100 * (mean(before) - mean(after))."""
    return float(100 * (np.mean(before) - np.mean(after)))


def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], level: float, n_resamples: int,
                 seed: int, paired: bool = False, method: str = "percentile") -> tuple[float, float]:
    """The one bootstrap of emis: scipy.stats.bootstrap of a vectorised `statistic(*samples, axis)`. `paired` resamples
    the rows of equal-length samples together; otherwise each sample is resampled on its own, keeping its size (a
    stratified bootstrap when the samples are classes). BCa falls back to percentile where it is undefined (a
    resampled statistic that never varies); an interval that still cannot be formed is (nan, nan)."""
    res = None
    for m in dict.fromkeys((method, "percentile")):
        res = stats.bootstrap(tuple(np.asarray(x, float) for x in samples), statistic, paired=paired, vectorized=True,
                              n_resamples=n_resamples, confidence_level=level, method=m, random_state=np.random.default_rng(seed))
        if np.all(np.isfinite(res.confidence_interval)):
            break
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def pooled_mean(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """The mean over the rows of all samples together (e.g. accuracy from the per-class correct flags)."""
    return sum(x.sum(axis) for x in samples) / sum(x.shape[axis] for x in samples)


def auroc(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC of positive over negative scores along `axis` (Mann-Whitney U / (n_pos n_neg), ties counted half)."""
    pos, neg = np.moveaxis(positive, axis, -1), np.moveaxis(negative, axis, -1)
    ranks = rankdata(np.concatenate([pos, neg], axis=-1), axis=-1)
    n_pos, n_neg = pos.shape[-1], neg.shape[-1]
    return (ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def cluster_bootstrap_ci(per_unit: Sequence[np.ndarray], clusters: Sequence[str], statistic: Callable[..., np.ndarray],
                         level: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """BCa interval (scipy.stats.bootstrap) of a statistic of per-cluster sums, resampling question clusters paired.

    `per_unit` are equal-length per-unit arrays; they are summed per cluster and `statistic(*sums, axis)` maps the
    resampled sums to the statistic (a ratio of sums, so a resample of k clusters weighs each unit once)."""
    arrays = [np.asarray(x, float) for x in per_unit]
    if any(x.shape != arrays[0].shape or x.ndim != 1 for x in arrays) or arrays[0].size == 0 or len(clusters) != arrays[0].size:
        raise ValueError("per-unit arrays and clusters must be equal-length, non-empty 1-D sequences")
    names, index = np.unique(np.asarray(clusters), return_inverse=True)
    sums = tuple(np.bincount(index, weights=x, minlength=names.size) for x in arrays)
    point = float(statistic(*(x[None] for x in sums), axis=-1)[0])
    if names.size < 2:
        return point, point
    jack = np.array([statistic(*(np.delete(x, i)[None] for x in sums), axis=-1)[0] for i in range(names.size)])
    if np.allclose(jack, jack[0]):
        return point, point  # the statistic does not vary with the clusters drawn: nothing to resample
    return bootstrap_ci(sums, statistic, level, n_resamples, seed, paired=True, method="BCa")


def reduction_ci(before: np.ndarray, after: np.ndarray, clusters: Sequence[str], level: float,
                 n_resamples: int, seed: int) -> tuple[float, float]:
    """Paired BCa interval of the reduction in points, resampling question clusters: per-unit outcomes are summed
    per cluster, and a resample's reduction is 100 * (sum before - sum after) / number of units drawn."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    if before.shape != after.shape:
        raise ValueError("before and after must be equal-length")

    def reduction(b: np.ndarray, a: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
        return 100 * (b.sum(axis) - a.sum(axis)) / n.sum(axis)

    return cluster_bootstrap_ci((before, after, np.ones_like(before)), clusters, reduction, level, n_resamples, seed)


def empirical_p(real: float, nulls: Sequence[float]) -> float:
    """One-sided p-value of the real effect among null effects: (1 + #{null >= real}) / (n + 1)."""
    arr = np.asarray(nulls, float)
    if arr.size == 0:
        raise ValueError("an empirical p-value needs at least one null effect")
    return float((1 + np.sum(arr >= real)) / (arr.size + 1))


def k_needed(k: int, alpha: float = ALPHA) -> float:
    """Members each of k equally sized families need so that all beaten gives Holm-adjusted p <= alpha: k/alpha - 1."""
    return k / alpha - 1


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (monotone, capped at 1): family-wise error control across the tests."""
    names = sorted(p_values, key=lambda n: p_values[n])
    m, running, out = len(names), 0.0, {}
    for i, name in enumerate(names):
        running = max(running, min(1.0, (m - i) * p_values[name]))
        out[name] = running
    return out


@dataclass
class ControlFamily:
    """One family of controls, measured on the report split: each member's effect (points), cosine to the real
    direction, mean write norm in generation and coherence."""

    effects: list[float]
    cosine_to_real: list[float] = field(default_factory=list)
    write_norms: list[float] = field(default_factory=list)
    coherence: list[float] = field(default_factory=list)
    raw_cosine_to_real: list[float] | None = None  # before orthogonalisation, where the family was orthogonalised

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["p95"] = float(np.percentile(self.effects, 95))
        return {k: v for k, v in out.items() if v is not None and v != []}


@dataclass
class Verdicts:
    """Per family p-values, Holm-adjusted within each tier, and the tiers' verdicts (None: no family of that tier)."""

    p_values: dict[str, float]
    p_holm: dict[str, float]
    direction_specific: bool
    em_specific: bool | None
    layer_localised: bool | None

    @property
    def verdict(self) -> str:
        """`specific` iff direction- and EM-specific (EM-specific is not required where no family tests it)."""
        return SPECIFIC if self.direction_specific and self.em_specific is not False else NOT_SPECIFIC

    def to_dict(self) -> dict[str, Any]:
        return {"direction_specific": self.direction_specific, "em_specific": self.em_specific,
                "layer_localised": self.layer_localised}


def decide(real: float, ci: tuple[float, float], families: Mapping[str, Sequence[float]],
           tiers: Mapping[str, Sequence[str]], alpha: float = ALPHA) -> Verdicts:
    """Tiered verdicts of a real effect (points, report split) with interval `ci` against control families.

    `tiers` maps "direction", "em" and "layer" to the families that gate them (absent or empty: that tier is not
    tested). A tier holds when the interval lies above 0 and every one of its families' Holm-adjusted p-values
    (within the tier) is at most `alpha`. Gating families need at least MIN_GATING_MEMBERS members."""
    if not tiers.get("direction"):
        raise ValueError("a verdict needs at least one direction-specificity control family")
    p = {name: empirical_p(real, effects) for name, effects in families.items()}
    adjusted: dict[str, float] = {}
    held: dict[str, bool | None] = {}
    for tier in ("direction", "em", "layer"):
        names = list(tiers.get(tier) or [])
        missing = [n for n in names if n not in families]
        if missing:
            raise ValueError(f"the {tier} tier names control families {missing} that were not measured")
        if not names:
            held[tier] = None
            continue
        best_case = holm({n: 1 / (len(families[n]) + 1) for n in names})
        if (min(len(families[n]) for n in names) < MIN_GATING_MEMBERS or max(best_case.values()) > alpha + _EPS):
            sizes = ", ".join(f"{n} {len(families[n])}" for n in names)
            raise ValueError(f"the {tier} tier's control families ({sizes}) are too small for its Holm-adjusted p-values to reach "
                             f"{alpha} (each needs at least {MIN_GATING_MEMBERS}, and k families about {round(k_needed(len(names), alpha))} each); "
                             "raise their counts under the stage's `controls`")
        tier_adjusted = holm({n: p[n] for n in names})
        adjusted |= tier_adjusted
        held[tier] = bool(ci[0] > 0 and all(v <= alpha + _EPS for v in tier_adjusted.values()))
    return Verdicts(p, adjusted, bool(held["direction"]), held["em"], held["layer"])
