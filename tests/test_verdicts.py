"""The verdict machinery by hand and calibrated end to end: planted nulls and planted effects through the real
selection rule (`best_point` on the selection split) and the real verdict code (`decide` on the report split)."""

import numpy as np
import pytest
from scipy import stats

from emis.stats import (
    NOT_SPECIFIC,
    SPECIFIC,
    QuestionSplit,
    decide,
    effect_points,
    empirical_p,
    holm,
    reduction_ci,
    split_questions,
)
from emis.steering import steering_tiers
from emis.sweep import best_point


def test_split_keeps_clusters_whole_and_is_seeded():
    clusters = [f"q{i // 3}" for i in range(30)]  # 10 study ids, 3 paraphrases each
    split = split_questions(clusters, 0.5, seed=4)
    assert split.to_dict() == {"n_select": 15, "n_report": 15, "seed": 4}
    chosen = {clusters[u] for u in split.select}
    assert chosen.isdisjoint({clusters[u] for u in split.report})
    assert sorted(np.concatenate([split.select, split.report]).tolist()) == list(range(30))
    assert np.array_equal(split_questions(clusters, 0.5, seed=4).report, split.report)
    assert not np.array_equal(split_questions(clusters, 0.5, seed=5).report, split.report)
    with pytest.raises(ValueError, match="at least 4"):
        split_questions(["a", "a", "b"], 0.5, 0)


def test_empirical_p_and_holm_by_hand():
    assert empirical_p(3.0, [1.0, 2.0, 3.0, 4.0]) == pytest.approx(3 / 5)  # ties count against the real effect
    assert empirical_p(9.0, [1.0] * 19) == pytest.approx(1 / 20)
    # Holm: sorted 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (monotone)
    assert holm({"a": 0.04, "b": 0.01, "c": 0.02}) == pytest.approx({"b": 0.03, "c": 0.04, "a": 0.04})
    assert holm({"a": 0.6, "b": 0.5}) == pytest.approx({"b": 1.0, "a": 1.0})


def test_reduction_ci_equals_scipy_on_cluster_sums_and_covers_the_effect():
    rng = np.random.default_rng(0)
    before = rng.random(40) < 0.5
    after = before & (rng.random(40) < 0.6)
    clusters = [f"id{i // 2}" for i in range(40)]
    lo, hi = reduction_ci(before, after, clusters, 0.95, 2000, seed=1)
    sums_b = np.add.reduceat(before.astype(float), np.arange(0, 40, 2))
    sums_a = np.add.reduceat(after.astype(float), np.arange(0, 40, 2))
    counts = np.full(20, 2.0)
    ref = stats.bootstrap((sums_b, sums_a, counts), lambda b, a, n, axis=-1: 100 * (b.sum(axis) - a.sum(axis)) / n.sum(axis),
                          paired=True, vectorized=True, n_resamples=2000, method="BCa", random_state=np.random.default_rng(1))
    assert (lo, hi) == pytest.approx(tuple(ref.confidence_interval))
    assert lo < effect_points(before, after) < hi
    assert reduction_ci(before, before, clusters, 0.95, 100, 0) == (0.0, 0.0)  # no change anywhere: a point


def _simulate(rng, effect: float, n_questions=120, base_rate=0.45, layers=2, alphas=(0.0, 1.0, 1.5, 2.0), members=60):
    """One synthetic experiment with common random numbers: each arm's outcome is the unsteered outcome, except that
    a share `churn` of questions are redrawn (noise the arms do not share) and a spilling answer stops spilling with
    probability `effect` under the real direction (every α and layer alike). Controls churn the same, without effect.
    Returns the verdict of the real pipeline: selection on half the questions, everything else on the other half."""
    churn = 0.15
    clusters = [f"q{i}" for i in range(n_questions)]
    split = split_questions(clusters, 0.5, int(rng.integers(1 << 30)))
    unsteered = (rng.random(n_questions) < base_rate).astype(float)

    def arm(eff: float) -> np.ndarray:
        out = unsteered.copy()
        redraw = rng.random(n_questions) < churn
        out[redraw] = rng.random(redraw.sum()) < base_rate
        out[(out == 1) & (rng.random(n_questions) < eff)] = 0.0
        return out

    sweeps = {layer: [unsteered] + [arm(effect) for _ in alphas[1:]] for layer in range(layers)}
    spill = {layer: [float(x[split.select].mean()) for x in arms] for layer, arms in sweeps.items()}
    admissible = {layer: [True] * len(alphas) for layer in sweeps}
    layer, b = best_point(list(alphas), spill, admissible)
    before, after = unsteered[split.report], sweeps[layer][b][split.report]
    real = effect_points(before, after)
    ci = reduction_ci(before, after, [clusters[u] for u in split.report], 0.95, 500, 0)
    families = {name: [effect_points(before, arm(0.0)[split.report]) for _ in range(n)]
                for name, n in (("random", members), ("shuffled_label", members), ("wrong_layer", members), ("secure_vs_base", 20))}
    return decide(real, ci, families, steering_tiers(families))


def test_planted_null_is_called_specific_at_most_5_percent_of_the_time():
    rng = np.random.default_rng(0)
    verdicts = [_simulate(rng, effect=0.0).verdict for _ in range(400)]
    rate = np.mean([v == SPECIFIC for v in verdicts])
    assert rate <= 0.05


def test_planted_effect_of_realistic_size_is_detected_in_80_percent_of_runs():
    """A 50% cut of spilling answers (about 22 points from 45%), as the organisms show, on 60 report questions."""
    rng = np.random.default_rng(1)
    verdicts = [_simulate(rng, effect=0.5).verdict for _ in range(200)]
    assert np.mean([v == SPECIFIC for v in verdicts]) >= 0.8


def test_tiers_and_the_verdict():
    tiers = {"direction": ["random"], "em": ["secure_vs_base"], "layer": ["wrong_layer_raw"]}
    low, high = [0.0] * 19, [50.0] * 19
    v = decide(10.0, (2.0, 18.0), {"random": low, "secure_vs_base": low, "wrong_layer_raw": high}, tiers)
    assert (v.direction_specific, v.em_specific, v.layer_localised, v.verdict) == (True, True, False, SPECIFIC)
    v = decide(10.0, (2.0, 18.0), {"random": low, "secure_vs_base": high, "wrong_layer_raw": low}, tiers)
    assert (v.direction_specific, v.em_specific, v.verdict) == (True, False, NOT_SPECIFIC)
    v = decide(10.0, (-1.0, 18.0), {"random": low, "secure_vs_base": low, "wrong_layer_raw": low}, tiers)
    assert v.verdict == NOT_SPECIFIC  # the interval reaches 0
    with pytest.raises(ValueError, match="too small"):
        decide(10.0, (2.0, 18.0), {"random": [0.0] * 5, "secure_vs_base": low}, {"direction": ["random"], "em": ["secure_vs_base"]})
    assert QuestionSplit(np.arange(3), np.arange(3, 5), 7).to_dict() == {"n_select": 3, "n_report": 2, "seed": 7}
