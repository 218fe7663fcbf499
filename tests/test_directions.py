"""Difference-in-means directions against numpy by hand, their save/load, and their refusals."""

import numpy as np
import pytest
import torch

from emis.capture import ActivationSet, ArtifactError
from emis.directions import DirectionSet, diff_in_means


def acts(x: np.ndarray, layers=(0, 3), position="last_prompt") -> ActivationSet:
    n = x.shape[0]
    return ActivationSet(torch.from_numpy(x).float(), list(layers), position, [f"p{i}" for i in range(n)], None, {"name": "m"}, "0")


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    return acts(rng.normal(1.0, 1.0, (7, 2, 5))), acts(rng.normal(0.0, 2.0, (4, 2, 5)))


def test_equals_numpy_by_hand(pair):
    mis, al = pair
    d = diff_in_means(mis, al)
    expected = np.empty((2, 5))
    for li in range(2):
        for j in range(5):
            expected[li, j] = sum(mis.activations[:, li, j].double().tolist()) / 7 - sum(al.activations[:, li, j].double().tolist()) / 4
    np.testing.assert_allclose(d.vectors.numpy(), expected, atol=1e-6, rtol=0)
    assert d.vectors.dtype == torch.float32 and d.layers == [0, 3]
    np.testing.assert_allclose(d.norms.numpy(), np.linalg.norm(expected, axis=1), rtol=1e-6)
    np.testing.assert_allclose(d.units.numpy(), expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    assert torch.equal(d.layer(3), d.vectors[1])
    assert d.provenance["n_misaligned"] == 7 and d.provenance["n_aligned"] == 4


def test_zero_direction_has_zero_unit():
    x = np.ones((2, 2, 3))
    d = diff_in_means(acts(x), acts(x))
    assert torch.equal(d.units, torch.zeros(2, 3))


def test_refusals(pair):
    mis, al = pair
    with pytest.raises(ValueError, match="aligned activation set is empty"):
        diff_in_means(mis, acts(np.zeros((0, 2, 5))))
    with pytest.raises(ValueError, match="misaligned activation set is empty"):
        diff_in_means(acts(np.zeros((0, 2, 5))), al)
    with pytest.raises(ValueError, match="layers differ"):
        diff_in_means(mis, acts(al.activations.numpy(), layers=(0, 2)))
    with pytest.raises(ValueError, match="widths differ"):
        diff_in_means(mis, acts(np.zeros((3, 2, 4))))
    with pytest.raises(ValueError, match="positions differ"):
        diff_in_means(mis, acts(al.activations.numpy(), position="response_mean"))


def test_save_load_bit_exact_and_corruption(pair, tmp_path):
    d = diff_in_means(*pair)
    d.save(tmp_path / "dir")
    again = DirectionSet.load(tmp_path / "dir")
    assert torch.equal(again.vectors, d.vectors) and again.layers == d.layers and again.provenance == d.provenance
    st = tmp_path / "dir.safetensors"
    st.write_bytes(st.read_bytes()[:20])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        DirectionSet.load(tmp_path / "dir")
