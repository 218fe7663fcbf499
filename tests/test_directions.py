"""Difference-in-means directions against numpy by hand, their save/load, and their refusals."""

import numpy as np
import pytest
import torch

from emis.capture import ActivationSet, ArtifactError
from emis.directions import (
    ControlConfig, DirectionSet, control_directions, diff_in_means, orthogonal_directions, random_directions,
    shuffled_label_directions,
)


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


def test_control_directions_by_hand(pair):
    mis, al = pair
    base = acts(np.random.default_rng(5).normal(0.5, 1.0, (6, 2, 5)))
    cfg = ControlConfig(n_random=20, n_orthogonal=4, n_shuffled=3, seed=0)
    c = control_directions(mis, al, base, 3, cfg)
    assert {k: tuple(v.shape) for k, v in c.items()} == {
        "random": (20, 5), "orthogonal": (4, 5), "wrong_layer": (1, 5), "shuffled_label": (3, 5), "secure_vs_base": (1, 5)}
    for v in c.values():
        np.testing.assert_allclose(v.norm(dim=-1).numpy(), 1.0, atol=1e-6)
    em = mis.activations[:, 1].double().mean(0) - al.activations[:, 1].double().mean(0)
    np.testing.assert_allclose((c["orthogonal"].double() @ em).numpy(), 0.0, atol=1e-6)
    layer0 = mis.activations[:, 0].double().mean(0) - al.activations[:, 0].double().mean(0)
    np.testing.assert_allclose(c["wrong_layer"][0].numpy(), (layer0 / layer0.norm()).numpy(), atol=1e-6)
    sb = al.activations[:, 1].double().mean(0) - base.activations[:, 1].double().mean(0)
    np.testing.assert_allclose(c["secure_vs_base"][0].numpy(), (sb / sb.norm()).numpy(), atol=1e-6)
    # a shuffled split is some relabelling of the pooled rows: its raw mean difference is a multiple of the unit row
    assert not torch.allclose(c["shuffled_label"][0], (em / em.norm()).float(), atol=1e-3)
    # seeded: the same config gives the same directions, another seed others
    again = control_directions(mis, al, base, 3, cfg)
    assert all(torch.equal(again[k], c[k]) for k in c)
    other = control_directions(mis, al, base, 3, ControlConfig(20, 4, 3, seed=1))
    assert not torch.equal(other["random"], c["random"])


def test_random_directions_are_isotropic():
    r = random_directions(8, 4000, seed=0).double()
    np.testing.assert_allclose(r.mean(0).numpy(), 0.0, atol=0.03)
    np.testing.assert_allclose((r.T @ r / 4000).numpy(), np.eye(8) / 8, atol=0.01)


def test_orthogonal_directions_exclude_v():
    v = torch.tensor([1.0, 2.0, 0.0, -1.0])
    o = orthogonal_directions(v, 10, seed=3)
    np.testing.assert_allclose((o @ v).numpy(), 0.0, atol=1e-6)


def test_shuffled_label_direction_equals_a_hand_relabelling():
    mis = torch.arange(12.0).reshape(4, 3)
    al = -torch.arange(9.0).reshape(3, 3)
    got = shuffled_label_directions(mis, al, 1, seed=7)[0]
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(7))
    pooled = torch.cat([mis, al]).double()
    raw = pooled[perm[:4]].mean(0) - pooled[perm[4:]].mean(0)
    np.testing.assert_allclose(got.numpy(), (raw / raw.norm()).numpy(), atol=1e-6)
