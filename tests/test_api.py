"""The Python API: the README's snippet verbatim on micro organisms, numbers checked against numpy and the stages."""

import numpy as np
import pytest
from conftest import CONF, LEAST_CONTROLS, MICRO, ROOT
from hydra import compose, initialize_config_dir

import emis


@pytest.fixture
def micro_api(micro_organisms):
    """The API pointed at the micro organisms (their corpus, with 40 evaluation questions) and short answers."""
    _, root, _ = micro_organisms
    corpus = [o for o in MICRO if o.startswith("organisms.corpus") and "heldout_questions" not in o]
    emis.configure(*corpus, "organisms.corpus.heldout_questions=40", f"paths.organisms={root}",
                   "eval.sampling.max_new_tokens=6", "steer.n_bootstrap=200")
    yield root
    emis.configure()


def readme_snippet() -> str:
    """The README's first Python block (its "In a notebook" example), as a researcher would paste it."""
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("## In a notebook")) + len("```python\n")
    return text[start:text.index("```", start)]


def test_the_readme_snippet_runs_verbatim(micro_api):
    snippet = readme_snippet()
    assert 'emis.load_pair("organism-llama")' in snippet and "emis.steer(pair, directions, layer=1" in snippet
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102  (the README's own code, verbatim)
    pair, acts, directions, sep, result = (scope[k] for k in ("pair", "acts", "directions", "sep", "result"))

    mis, al = acts.misaligned.activations.double().numpy(), acts.aligned.activations.double().numpy()
    np.testing.assert_allclose(directions.vectors.numpy(), mis.mean(0) - al.mean(0), rtol=1e-5, atol=1e-6)
    assert acts.base is not None and acts.misaligned.activations.shape[:2] == (200, pair.misaligned.n_layers)
    assert sep.layers == list(range(pair.misaligned.n_layers)) and all(0.0 <= a <= 1.0 for a in sep.accuracy)
    metrics = result.to_dict()
    assert metrics["model"] == "llama" and metrics["layers"] == [1] and metrics["alphas"] == [0.0, 1.0] and metrics["n_prompts"] == 40
    assert result.reduction_points == pytest.approx(100 * (metrics["unsteered_spillover"] - metrics["best"]["spillover"]))
    assert result.ci95[0] <= result.reduction_points <= result.ci95[1]
    assert set(result.p_values) == {"random", "shuffled_label", "wrong_layer", "wrong_layer_raw", "secure_vs_base"}
    assert result.verdict in ("specific", "not specific")
    assert len(metrics["controls"]["random"]["effects"]) == 60
    assert result.plot().axes  # a figure with its panels


def test_api_errors_are_one_clear_line(micro_api):
    with pytest.raises(ValueError, match="organism_probe"):
        emis.questions("probe", n=3)
    with pytest.raises(ValueError, match="evaluation questions"):
        emis.questions("organism_heldout", n=1000)


def test_a_calibrated_monitor_projects_like_numpy(micro_api):
    pair = emis.load_pair("organism-qwen2")
    acts = emis.capture(pair, emis.questions("organism_probe", n=120))
    monitor, calibration = emis.calibrate_monitor(acts.misaligned, acts.aligned, fpr=0.1, layer=-1)
    assert isinstance(monitor, emis.Monitor) and monitor.layer == pair.misaligned.n_layers - 1 and calibration.fpr_target == 0.1
    fit = calibration.split
    x = lambda a, rows: a.activations[rows, monitor.layer].double().numpy()  # noqa: E731
    v = x(acts.misaligned, fit.pos["fit"]).mean(0) - x(acts.aligned, fit.neg["fit"]).mean(0)
    np.testing.assert_allclose(monitor.direction.double().numpy(), v / np.linalg.norm(v), atol=1e-5)
    scores = monitor.project(acts.aligned)
    np.testing.assert_allclose(scores, acts.aligned.activations[:, monitor.layer].double().numpy() @ (v / np.linalg.norm(v)), rtol=1e-4, atol=1e-4)
    negatives = scores[fit.neg["calibration"]]
    assert (negatives > monitor.threshold).sum() <= int(0.1 * len(negatives))  # the threshold keeps the asked FPR
    assert calibration.fpr == pytest.approx(float((scores[fit.neg["test"]] > monitor.threshold).mean()))


@pytest.mark.slow
def test_api_transfer_equals_the_transfer_stage(micro_api, tmp_path):
    """emis.transfer on two loaded pairs gives the transfer stage's numbers for the same settings and questions."""
    small = ["capture.n_prompts=96", "transfer.n_prompts=12", "transfer.max_new_tokens=6", *LEAST_CONTROLS,
             "steer.n_bootstrap=200", "transfer.models=[mistral,llama]"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # the API's settings, through the stage
        cfg = compose("transfer", overrides=[*emis.api._overrides, f"paths.root={ROOT}", f"paths.outputs={tmp_path / 'stage'}", *small])
    from emis.stages.transfer import run_transfer
    stage = run_transfer(cfg, tmp_path)

    emis.configure(*emis.api._overrides, *small)
    pairs = {name: emis.load_pair(f"organism-{name}") for name in ("mistral", "llama")}
    probe = emis.questions("organism_probe", n=96, seed=1)  # capture.prompt_seed
    result = emis.transfer(pairs, {n: emis.capture(p, probe, batch_size=32) for n, p in pairs.items()},
                           emis.questions("organism_heldout", n=12), cache_dir=tmp_path / "api")
    api = result.to_dict()
    assert api["models"] == ["mistral", "llama"] and len(api["pairs"]) == 2
    for ours, theirs in zip(api["pairs"], stage["pairs"]):
        assert (ours["donor"], ours["receiver"], ours["verdict"]) == (theirs["donor"], theirs["receiver"], theirs["verdict"])
        for key in ("r2", "cosine", "alpha", "reduction_points", "ci95", "p_values"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key
        assert ours["delta_norm"]["real"] == pytest.approx(theirs["delta_norm"]["real"], rel=1e-6)
        for family, writes in theirs["delta_norm"]["controls"].items():
            assert ours["delta_norm"]["controls"][family] == pytest.approx(writes, rel=1e-6), family
    assert api["native"] == stage["native"]
    assert result.plot().axes
