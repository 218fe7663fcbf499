"""Difference-in-means directions against numpy by hand, their save/load (folder, hub cache, older two files), and
their refusals."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import emis
from emis.activations import ActivationSet, ArtifactError
from emis.directions import (
    WriteMatch,
    ControlConfig,
    DirectionSet,
    control_directions,
    diff_in_means,
    orthogonalised,
    random_directions,
    shuffled_label_directions,
)
from emis.io import save_tensor_artifact
from emis.models import ModelSpec


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


def shared_pair() -> tuple[ActivationSet, ActivationSet]:
    """A pair captured from pinned models (ModelSpec dicts, as a capture stores them) on overlapping questions."""
    rng = np.random.default_rng(1)
    mis_model = ModelSpec("org/base-7b", adapter="org/em-adapter", revision="a" * 40, adapter_revision="v1").to_dict()
    al_model = ModelSpec("org/base-7b", adapter="org/secure-adapter", revision="a" * 40, adapter_revision="b" * 40).to_dict()
    mis = ActivationSet(torch.from_numpy(rng.normal(1.0, 1.0, (3, 2, 5))).float(), [0, 3], "last_prompt",
                        ["q2", "q1", "q3"], None, mis_model, "0")
    al = ActivationSet(torch.from_numpy(rng.normal(0.0, 1.0, (2, 2, 5))).float(), [0, 3], "last_prompt",
                       ["q1", "q2"], None, al_model, "0")
    return mis, al


def assert_same(a: DirectionSet, b: DirectionSet) -> None:
    assert torch.equal(a.vectors, b.vectors) and a.vectors.dtype == b.vectors.dtype == torch.float32
    assert a.layers == b.layers and a.provenance == b.provenance and a.card == b.card


def test_folder_round_trip_is_bit_exact_and_its_card_names_the_pair(tmp_path):
    mis, al = shared_pair()
    d = diff_in_means(mis, al, contrast="models")
    d.save(tmp_path / "shared")
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["directions.json", "directions.safetensors"]
    again = DirectionSet.load(tmp_path / "shared")
    assert_same(again, d)
    card = json.loads((tmp_path / "shared" / "directions.json").read_text())
    assert card["models"] == {
        "misaligned": {"name": "org/base-7b", "revision": "a" * 40, "adapter": "org/em-adapter", "adapter_revision": "v1"},
        "aligned": {"name": "org/base-7b", "revision": "a" * 40, "adapter": "org/secure-adapter", "adapter_revision": "b" * 40}}
    assert (card["layers"], card["position"], card["contrast"], card["emis_version"]) == ([0, 3], "last_prompt", "models", emis.__version__)
    by_hand = hashlib.sha256(json.dumps(["q1", "q2", "q3"]).encode()).hexdigest()  # the distinct questions, sorted
    assert card["questions_sha256"] == by_hand == again.card["questions_sha256"]
    assert {k: card[k] for k in again.card} == again.card


def test_loads_a_hub_id_from_the_hub_cache(tmp_path, monkeypatch):
    """Two revisions of a published set planted in huggingface_hub's cache layout (models--org--name/refs, snapshots);
    the hub is offline (its HF_HUB_OFFLINE and HF_HUB_CACHE constants set), so snapshot_download reads the cache."""
    import huggingface_hub.constants

    mis, al = shared_pair()
    first, second = diff_in_means(mis, al), diff_in_means(al, mis)
    repo = tmp_path / "hub" / "models--org--em-directions"
    for commit, d in (("1" * 40, first), ("2" * 40, second)):
        d.save(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # no local folder called org/...
    assert_same(emis.DirectionSet.load("org/em-directions"), first)
    assert_same(emis.DirectionSet.load(f"org/em-directions@{'2' * 40}"), second)
    with pytest.raises(ArtifactError, match=r"org/absent@main: not a local path") as err:
        emis.DirectionSet.load("org/absent")
    assert "\n" not in str(err.value)


def test_the_older_two_file_form_still_loads(pair, tmp_path):
    d = diff_in_means(*pair)
    save_tensor_artifact(tmp_path / "dir", "vectors", d.vectors, {"layers": d.layers, "provenance": d.provenance})  # what save wrote
    assert_same(DirectionSet.load(tmp_path / "dir"), d)
    assert_same(DirectionSet.load(str(tmp_path / "dir")), d)


def one_line_refusal(path, match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as err:
        DirectionSet.load(path)
    assert "\n" not in str(err.value)


def test_a_corrupt_folder_is_refused_in_one_line(pair, tmp_path):
    d = diff_in_means(*pair)
    st, js = tmp_path / "s" / "directions.safetensors", tmp_path / "s" / "directions.json"
    d.save(tmp_path / "s")
    raw = st.read_bytes()
    st.write_bytes(raw[:-4] + bytes(4))  # one float of the last direction zeroed: the header still parses
    one_line_refusal(tmp_path / "s", "does not match the checksum")
    st.write_bytes(raw[:20])
    one_line_refusal(tmp_path / "s", "corrupt or truncated")
    st.write_bytes(raw)
    card = json.loads(js.read_text())
    js.write_text(json.dumps({**card, "tensor": {**card["tensor"], "shape": [3, 5]}}))
    one_line_refusal(tmp_path / "s", r"holds \[2, 5\]")
    js.write_text(json.dumps({**card, "contrast": "responses"}))  # a card edited apart from its provenance
    one_line_refusal(tmp_path / "s", "card disagrees with its provenance")
    js.unlink()
    one_line_refusal(tmp_path / "s", "directions.json is missing")
    one_line_refusal(tmp_path / "nothing", "no directions folder there")


def test_control_directions_by_hand():
    rng = np.random.default_rng(5)
    mis, al, base = (acts(rng.normal(mu, 1.0, (6, 2, 5))) for mu in (1.0, 0.0, 0.5))  # rows paired by question
    cfg = ControlConfig(n_random=20, n_shuffled=3, n_wrong_layer=4, n_wrong_layer_raw=2, n_secure_vs_base=5, n_mapped_random=0,
                        n_native_random=0, seed=0, match=WriteMatch(0.05, 2))
    c = control_directions(mis, al, base, 3, cfg)
    assert {k: tuple(v.units.shape) for k, v in c.items()} == {
        "random": (20, 5), "shuffled_label": (3, 5), "wrong_layer": (4, 5), "wrong_layer_raw": (2, 5), "secure_vs_base": (5, 5)}
    em = mis.activations[:, 1].double().mean(0) - al.activations[:, 1].double().mean(0)
    u = em / em.norm()
    for name, fam in c.items():
        np.testing.assert_allclose(fam.units.norm(dim=-1).numpy(), 1.0, atol=1e-6)
        if name in ("shuffled_label", "wrong_layer"):
            np.testing.assert_allclose((fam.units.double() @ u).numpy(), 0.0, atol=1e-6)  # orthogonalised ...
            assert (fam.raw_cosine.abs() > 1e-3).any()  # ... from directions that were not
        else:
            np.testing.assert_allclose(fam.raw_cosine.numpy(), (fam.units.double() @ u).numpy(), atol=1e-6)
    # wrong_layer_raw: bootstrap resamples of the paired rows at layer 0, by hand
    d0 = (mis.activations[:, 0] - al.activations[:, 0]).double()
    idx = torch.randint(0, d0.shape[0], (4, d0.shape[0]), generator=torch.Generator().manual_seed(10))
    boot = d0[idx].mean(1)
    np.testing.assert_allclose(c["wrong_layer_raw"].units.numpy(), (boot / boot.norm(dim=-1, keepdim=True))[:2].numpy(), atol=1e-6)
    # seeded: the same config gives the same directions, another seed others
    again = control_directions(mis, al, base, 3, cfg)
    assert all(torch.equal(again[k].units, c[k].units) for k in c)
    other = control_directions(mis, al, base, 3, replace(cfg, seed=1))
    assert not torch.equal(other["random"].units, c["random"].units)
    assert "secure_vs_base" not in control_directions(mis, al, None, 3, cfg)


def test_random_directions_are_isotropic():
    r = random_directions(8, 4000, seed=0).double()
    np.testing.assert_allclose(r.mean(0).numpy(), 0.0, atol=0.03)
    np.testing.assert_allclose((r.T @ r / 4000).numpy(), np.eye(8) / 8, atol=0.01)


def test_orthogonalised_directions_exclude_v():
    v = torch.tensor([1.0, 2.0, 0.0, -1.0])
    fam = orthogonalised(random_directions(4, 10, seed=3), v)
    np.testing.assert_allclose((fam.units @ v).numpy(), 0.0, atol=1e-6)


def test_shuffled_label_direction_swaps_within_pairs_by_hand():
    mis = torch.arange(12.0).reshape(4, 3)
    al = -torch.arange(12.0).reshape(4, 3) * 0.5
    got = shuffled_label_directions(mis, al, 2, seed=7)
    signs = torch.randint(0, 2, (2, 4), generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 - 1
    raw = signs @ (mis - al).double() / 4
    np.testing.assert_allclose(got.numpy(), (raw / raw.norm(dim=-1, keepdim=True)).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="paired"):
        shuffled_label_directions(mis, al[:3], 1, seed=0)
