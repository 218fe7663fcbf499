"""Separation metrics against hand computations on small hand-built data."""

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from emis.activations import ActivationSet
from emis.io import save_figure
from emis.separability import SeparationConfig, plot_separation, separate_arrays, separation
from emis.stats import auroc

CFG = SeparationConfig(test_size=0.4, seed=3, n_bootstrap=500, cv_folds=3, ci_level=0.95)


def one_d(pos, neg):
    """x [N, 1 layer, 1] with misaligned rows first, and labels."""
    x = np.array(list(pos) + list(neg), dtype=float).reshape(-1, 1, 1)
    return x, np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]


def test_separable_data_scores_one_everywhere():
    x, y = one_d(np.arange(2.0, 12.0), -np.arange(2.0, 12.0))
    r = separate_arrays(x, y, [5], CFG)
    assert (r.accuracy, r.auroc, r.probe_accuracy) == ([1.0], [1.0], [1.0])
    assert r.accuracy_ci == r.auroc_ci == r.probe_accuracy_ci == [(1.0, 1.0)]
    assert (r.n_train, r.n_test, r.layers) == (12, 8, [5])


def test_overlapping_data_matches_a_hand_computation():
    pos = [3.0, 2.5, 1.0, 0.2, -0.5, 1.5, 2.0, 0.8, -1.0, 2.2, 0.1, 1.1]
    neg = [0.0, -1.0, 0.5, 1.2, -2.0, -0.3, 0.9, -1.5, 0.4, -0.8, 1.6, -0.1]
    x, y = one_d(pos, neg)
    r = separate_arrays(x, y, [0], CFG)

    train, test = train_test_split(np.arange(len(y)), test_size=CFG.test_size, stratify=y, random_state=CFG.seed)
    v = x[train, 0, 0][y[train] == 1].mean() - x[train, 0, 0][y[train] == 0].mean()
    s = x[:, 0, 0] * np.sign(v)  # the unit direction in one dimension is the sign of the mean difference
    t = (s[train][y[train] == 1].mean() + s[train][y[train] == 0].mean()) / 2
    hits = sum(int((s[i] > t) == bool(y[i])) for i in test)
    pairs = [(s[i], s[j]) for i in test if y[i] == 1 for j in test if y[j] == 0]
    auroc = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)

    assert r.threshold[0] == pytest.approx(t)
    assert r.accuracy[0] == pytest.approx(hits / len(test))
    assert r.auroc[0] == pytest.approx(auroc)
    assert 0.5 < r.auroc[0] < 1.0 and r.accuracy[0] < 1.0  # the case really overlaps

    scaler = StandardScaler().fit(x[train, 0])
    probe = LogisticRegression(C=r.probe_c[0], max_iter=1000).fit(scaler.transform(x[train, 0]), y[train])
    expected_probe = (probe.predict(scaler.transform(x[test, 0])) == y[test]).mean()
    assert r.probe_accuracy[0] == pytest.approx(expected_probe)


@pytest.fixture
def noisy():
    """Two layers of 6-d data: layer 0 weakly separated, layer 1 strongly, 30 rows per class."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(30, int), np.zeros(30, int)]
    shift = np.stack([np.full(6, 0.3), np.full(6, 1.5)])  # [L, d]
    x = rng.normal(size=(60, 2, 6)) + y[:, None, None] * shift
    return x, y


def test_intervals_contain_estimates_and_seeds_reproduce(noisy):
    x, y = noisy
    r = separate_arrays(x, y, [0, 1], CFG)
    for key in ("accuracy", "auroc", "probe_accuracy"):
        for est, (lo, hi) in zip(getattr(r, key), getattr(r, f"{key}_ci")):
            assert lo <= est <= hi and lo < hi or est == lo == hi == 1.0
    assert r.auroc[1] > r.auroc[0]
    assert separate_arrays(x, y, [0, 1], CFG) == r
    other = separate_arrays(x, y, [0, 1], SeparationConfig(0.4, 4, 500, 3, 0.95))
    assert other.accuracy_ci != r.accuracy_ci
    json.dumps(r.to_dict())


def test_vectorised_bootstrap_auroc_equals_sklearn():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=(20, 9)).astype(float)  # many ties
    labels = np.r_[np.ones(4), np.zeros(5)]
    expected = [roc_auc_score(labels, row) for row in scores]
    np.testing.assert_allclose(auroc(scores[:, :4], scores[:, 4:]), expected)


def test_activation_sets_and_plot(noisy, tmp_path):
    x, y = noisy

    def acts(rows):
        return ActivationSet(torch.from_numpy(x[rows]).float(), [4, 7], "last_prompt", ["p"] * len(rows), None, {}, "0")

    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    r = separation(acts(pos), acts(neg), CFG)
    groups = np.r_[np.arange(30), np.arange(30)]  # equal sides are paired by question: row i of each side is one group
    assert r == separate_arrays(x.astype(np.float32), y, [4, 7], CFG, groups)
    assert r != separate_arrays(x.astype(np.float32), y, [4, 7], CFG)  # the ungrouped split is another split
    control = separate_arrays(x, np.random.default_rng(0).permutation(y), [4, 7], CFG)
    save_figure(plot_separation(r, control), tmp_path / "sep.png")
    assert (tmp_path / "sep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_few_rows_is_a_clear_error():
    x, y = one_d([1.0, 2.0, 3.0, 4.0], [0.0, -1.0, -2.0, -3.0])
    with pytest.raises(ValueError, match="too few rows"):
        separate_arrays(x, y, [0], CFG)


def test_a_questions_two_rows_stay_on_one_side_of_the_split():
    """Grouped: the held-out rows of the misaligned side are the same questions as those of the aligned side."""
    from emis.separability import heldout_split
    n = 50
    y = np.r_[np.ones(n, int), np.zeros(n, int)]
    groups = np.r_[np.arange(n), np.arange(n)]
    for seed in range(5):
        train, test = heldout_split(y, 0.3, seed, groups)
        assert set(groups[test]).isdisjoint(groups[train])
        assert sorted(groups[test][y[test] == 1]) == sorted(groups[test][y[test] == 0])
    _, ungrouped = heldout_split(y, 0.3, 0)
    assert set(groups[ungrouped][y[ungrouped] == 1]) != set(groups[ungrouped][y[ungrouped] == 0])  # what grouping prevents
