"""Ridge maps against closed-form numpy, a planted linear relation, and self-transfer on a micro organism."""

import numpy as np
import pytest
import torch
from conftest import CONF, LEAST_CONTROLS, MICRO, ROOT
from hydra import compose, initialize_config_dir
from loopback import serve, text_completion

from emis.stages.transfer import run_transfer
from emis.stats import NOT_SPECIFIC, SPECIFIC, decide
from emis.transfer_matrix import MapConfig, fit_map


def _split(n, test_size, seed):
    from sklearn.model_selection import train_test_split
    return train_test_split(np.arange(n), test_size=test_size, random_state=seed)


def test_ridge_map_equals_closed_form_and_r2_by_hand():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 6)), rng.normal(size=(80, 4))
    y += x @ rng.normal(size=(6, 4))
    lam = 3.0
    m = fit_map(x, y, MapConfig("ridge", (lam,), 0.25, 7))
    train, test = _split(80, 0.25, 7)
    xm, ym = x[train].mean(0), y[train].mean(0)
    xc, yc = x[train] - xm, y[train] - ym
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(6), xc.T @ yc)  # [6, 4]
    np.testing.assert_allclose(m.coef, w.T, atol=1e-4)
    np.testing.assert_allclose(m.intercept, ym - xm @ w, atol=1e-4)
    pred = (x[test] - xm) @ w + ym
    r2 = 1 - ((y[test] - pred) ** 2).sum() / ((y[test] - y[test].mean(0)) ** 2).sum()
    assert m.r2 == pytest.approx(r2, abs=1e-6)
    # centred on the receiver's training mean, so a shared offset does not make every prediction look aligned
    cos = np.mean([(p - ym) @ (t - ym) / np.linalg.norm(p - ym) / np.linalg.norm(t - ym) for p, t in zip(pred, y[test])])
    assert m.cosine == pytest.approx(cos, abs=1e-6)


def test_ridge_cv_picks_from_the_grid():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    m = fit_map(x, x @ rng.normal(size=(5, 3)), MapConfig("ridge_cv", (0.001, 1.0, 1000.0), 0.2, 0))
    assert m.alpha == 0.001 and m.r2 > 0.999
    with pytest.raises(ValueError, match="ridge_cv"):
        fit_map(x, x, MapConfig("lasso", (1.0,), 0.2, 0))


def test_planted_direction_is_recovered_through_a_known_map():
    rng = np.random.default_rng(2)
    d_donor, d_receiver = 12, 9
    a = rng.normal(size=(d_donor, d_receiver))
    x = rng.normal(size=(600, d_donor))
    planted = rng.normal(size=d_donor)
    x[:300] += planted  # the donor's "misaligned" rows are shifted along the planted direction
    y = x @ a + 0.01 * rng.normal(size=(600, d_receiver))
    m = fit_map(x, y, MapConfig("ridge_cv", (1e-3, 1e-1, 10.0), 0.2, 0))
    donor_dim = torch.from_numpy(x[:300].mean(0) - x[300:].mean(0))
    mapped = m.push(donor_dim).double().numpy()
    truth = donor_dim.numpy() @ a  # the donor's direction carried by the true map
    assert mapped @ truth / np.linalg.norm(mapped) / np.linalg.norm(truth) > 0.999
    np.testing.assert_allclose(m.coef, a.T, atol=0.01)
    assert m.r2 > 0.99


def test_a_planted_non_specific_transfer_is_flagged():
    # the mapped direction suppresses 30 points, but mapped random directions suppress about as much
    tiers = {"direction": ["mapped_random", "native_random"]}
    native = list(np.linspace(-2, 2, 40))
    controls = {"mapped_random": list(np.linspace(20, 40, 40)), "native_random": native}
    flagged = decide(30.0, (20.0, 40.0), controls, tiers)
    assert flagged.verdict == NOT_SPECIFIC and flagged.p_values["mapped_random"] == pytest.approx(21 / 41)
    specific = decide(30.0, (20.0, 40.0), {"mapped_random": list(np.linspace(-5, 5, 40)), "native_random": native}, tiers)
    assert specific.verdict == SPECIFIC and specific.em_specific is None
    assert specific.p_holm == pytest.approx({"mapped_random": 2 / 41, "native_random": 2 / 41})  # Holm over the two
    with pytest.raises(ValueError, match="too small"):  # 20 each: Holm can never bring 1/21 under 0.05 twice over
        decide(30.0, (20.0, 40.0), {"mapped_random": [0.0] * 20, "native_random": [0.0] * 20}, tiers)


def self_map_cosine(cfg, pair) -> float:
    """By hand, the cosine a model's ridge self-map (fit on its base's training rows, centred) leaves between its
    native direction and the direction's image: the map is V diag(s^2 / (s^2 + lambda)) V^T from the SVD of those rows,
    so the image loses what of the direction lies where the base's activations do not vary."""
    from sklearn.model_selection import train_test_split

    from emis.configured import role_activations

    acts, _ = role_activations(cfg, cfg.models[pair["receiver"]])
    row = acts["misaligned"].layers.index(pair["layer"])
    x = acts["base"].activations[:, row].double().numpy()
    v = (acts["misaligned"].activations[:, row].double().mean(0) - acts["aligned"].activations[:, row].double().mean(0)).numpy()
    train, _ = train_test_split(np.arange(len(x)), test_size=cfg.transfer.map.test_size, random_state=cfg.transfer.map.seed)
    _, s, vt = np.linalg.svd(x[train] - x[train].mean(0), full_matrices=False)
    image = vt.T @ (s**2 / (s**2 + pair["ridge_alpha"]) * (vt @ v))
    return float(image @ v / np.linalg.norm(image) / np.linalg.norm(v))


@pytest.mark.slow
def test_self_transfer_recovers_the_native_direction(micro_organisms, tmp_path):
    """transfer.self_check maps each model onto itself: its native direction and suppression must come back."""
    _, root, _ = micro_organisms
    overrides = [o for o in MICRO if o.startswith("organisms.corpus")]
    overrides += [f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={tmp_path}", "capture.n_prompts=96",
                  "transfer.n_prompts=12", "transfer.max_new_tokens=6", *LEAST_CONTROLS, "steer.n_bootstrap=200", "transfer.map.alphas=[1e-8,1e-6]",
                  "transfer.models=[mistral,llama]", "transfer.self_check=true"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("transfer", overrides=overrides)
    metrics = run_transfer(cfg, tmp_path)
    assert [(p["donor"], p["receiver"]) for p in metrics["pairs"]] == [("mistral", "llama"), ("llama", "mistral")]
    assert [(p["donor"], p["receiver"]) for p in metrics["self_transfer"]] == [("mistral", "mistral"), ("llama", "llama")]
    for pair in metrics["self_transfer"]:
        native = metrics["native"][pair["receiver"]]
        assert pair["cosine_to_native"] == pytest.approx(self_map_cosine(cfg, pair), abs=1e-4)
        assert pair["cosine_to_native"] >= 0.95  # the native direction lies mostly where the base's activations vary
        assert pair["r2"] > 0.99
        lo, hi = native["ci95"]
        assert lo <= pair["reduction_points"] <= hi
        assert set(pair["controls"]) == {"mapped_random", "mapped_wrong_layer", "native_random"}


@pytest.mark.slow
def test_judged_transfer_counts_score_methods(micro_organisms, em_files_server, tmp_path, monkeypatch):
    """A keyless loopback judge without logprobs picks each α by parsed coherence; metrics.json's judge entry counts
    every judged answer of every sweep (two receivers' α 0 and 1, two pairs' α 1; 12 rows; two prompts), all parsed."""
    _, root, _ = micro_organisms
    url, _ = em_files_server
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with serve(lambda body: text_completion("90")) as judge:
        overrides = [o for o in MICRO if o.startswith("organisms.corpus")]
        overrides += [f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={tmp_path}", "capture.n_prompts=96",
                      "transfer.n_prompts=12", "transfer.max_new_tokens=6", *LEAST_CONTROLS, "steer.n_bootstrap=200",
                      "transfer.map.alphas=[1e-8,1e-6]", "transfer.models=[mistral,llama]", "judge=openai-compatible",
                      f"judge.base_url={judge.url}", "judge.model=judge-test", f"judge.prompts_from={url}/first_plot_questions.yaml",
                      "judge.max_retries=0", "judge.cache_dir=null"]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("transfer", overrides=overrides)
        metrics = run_transfer(cfg, tmp_path)
    assert metrics["judge"] == {"model": "judge-test", "score_methods": {"parsed": (2 * 2 + 2 * 1) * 12 * 2}}
    assert all("Authorization" not in r["headers"] for r in judge.requests)
