"""Is a steering effect specific? Paired bootstrap intervals and the real effect against control families.

The rule (shared by within-model steering and transfer): `specific` only when the real effect's
interval excludes 0 and the effect exceeds the 95th percentile of every control family."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SPECIFIC, NOT_SPECIFIC = "specific", "not specific"


@dataclass
class ControlSummary:
    """Effects (points) of one control family, their 95th percentile, and where the real effect falls among them."""

    effects: list[float]
    p95: float
    percentile: float  # share of control effects below the real effect, in percent (ties count half)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def effect_points(before: np.ndarray, after: np.ndarray) -> float:
    """Reduction of a rate in percentage points: 100 * (mean(before) - mean(after))."""
    return float(100 * (np.mean(before) - np.mean(after)))


def paired_bootstrap_ci(before: np.ndarray, after: np.ndarray, n: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of the reduction (points), resampling prompts with their before/after outcomes paired."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    if before.shape != after.shape or before.ndim != 1 or before.size == 0:
        raise ValueError("before and after must be equal-length, non-empty 1-D outcome arrays")
    idx = np.random.default_rng(seed).integers(0, before.size, (n, before.size))
    diffs = 100 * (before[idx].mean(1) - after[idx].mean(1))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def effects_by_family(families: list[str], before: np.ndarray, afters: list[np.ndarray]) -> dict[str, list[float]]:
    """Reduction (points) of each control run, grouped by the family named at the same position."""
    out: dict[str, list[float]] = {}
    for family, after in zip(families, afters, strict=True):
        out.setdefault(family, []).append(effect_points(before, after))
    return out


def summarise_controls(real: float, effects: dict[str, list[float]]) -> dict[str, ControlSummary]:
    """Per family: effects, 95th percentile and the real effect's percentile within them."""
    out = {}
    for family, values in effects.items():
        arr = np.asarray(values, float)
        if arr.size == 0:
            raise ValueError(f"control family {family!r} has no effects")
        pct = 100 * (np.mean(arr < real) + 0.5 * np.mean(arr == real))
        out[family] = ControlSummary([float(x) for x in arr], float(np.percentile(arr, 95)), float(pct))
    return out


def verdict(real: float, ci: tuple[float, float], controls: dict[str, ControlSummary]) -> str:
    """`specific` iff the interval excludes 0 (above it) and the effect beats every family's 95th percentile."""
    if not controls:
        raise ValueError("a verdict needs at least one control family")
    ok = ci[0] > 0 and all(real > c.p95 for c in controls.values())
    return SPECIFIC if ok else NOT_SPECIFIC
