"""The specificity rule and its statistics against hand computations."""

import numpy as np
import pytest

from emis.specificity import (
    NOT_SPECIFIC, SPECIFIC, effect_points, effects_by_family, paired_bootstrap_ci, summarise_controls, verdict,
)


def test_effect_points_by_hand():
    assert effect_points(np.array([1, 1, 0, 1]), np.array([0, 1, 0, 0])) == pytest.approx(50.0)


def test_paired_bootstrap_matches_a_hand_resampling():
    before = np.array([1, 1, 0, 1, 1, 0, 1, 1], float)
    after = np.array([0, 1, 0, 0, 0, 0, 1, 0], float)
    lo, hi = paired_bootstrap_ci(before, after, 500, seed=3, level=0.9)
    idx = np.random.default_rng(3).integers(0, 8, (500, 8))
    diffs = 100 * (before[idx].mean(1) - after[idx].mean(1))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(diffs, [0.05, 0.95])))
    assert lo <= effect_points(before, after) <= hi


def test_percentile_and_p95_by_hand():
    s = summarise_controls(10.0, {"random": [1.0, 2.0, 10.0, 20.0], "one": [3.0]})
    assert s["random"].percentile == pytest.approx(100 * (2 + 0.5) / 4)
    assert s["random"].p95 == pytest.approx(np.percentile([1, 2, 10, 20], 95))
    assert s["one"].p95 == 3.0 and s["one"].percentile == 100.0


def test_verdict_rule():
    controls = summarise_controls(30.0, {"random": list(range(0, 21)), "orth": [5.0]})
    assert verdict(30.0, (20.0, 40.0), controls) == SPECIFIC
    assert verdict(30.0, (-1.0, 40.0), controls) == NOT_SPECIFIC  # interval touches zero
    beaten = summarise_controls(15.0, {"random": list(range(0, 21)), "orth": [5.0]})
    assert verdict(15.0, (10.0, 20.0), beaten) == NOT_SPECIFIC  # below the random family's 95th percentile
    with pytest.raises(ValueError):
        verdict(1.0, (0.5, 2.0), {})


def test_effects_are_grouped_by_family_in_order():
    before = np.array([1, 1, 0, 1], float)
    afters = [np.array([0, 1, 0, 1], float), np.array([1, 1, 0, 1], float), np.zeros(4)]
    got = effects_by_family(["random", "orth", "random"], before, afters)
    assert got == {"random": [25.0, 75.0], "orth": [0.0]}
    with pytest.raises(ValueError):
        effects_by_family(["random"], before, afters)
