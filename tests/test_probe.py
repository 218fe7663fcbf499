"""The probe stage end to end on micro organisms: metrics fields, directions equal the cached activations by hand."""

import json

import numpy as np
import pytest
from conftest import compose_on_micro
from safetensors.torch import load_file

from emis.directions import DirectionSet
from emis.stages.probe import run_probe


@pytest.fixture(scope="module")
def probe_run(micro_organisms, tmp_path_factory):
    _, root, _ = micro_organisms
    out = tmp_path_factory.mktemp("probe")
    cfg = compose_on_micro("probe", root, out, [
        "model=organism-gemma2", "capture.n_prompts=12", "separation.n_bootstrap=50", "separation.cv_folds=2"])
    return run_probe(cfg, out), out


def test_metrics_fields(probe_run):
    metrics, out = probe_run
    n_layers = 2
    for block in (metrics, metrics["control"]):
        assert block["layers"] == list(range(n_layers))
        for key in ("heldout_accuracy", "auroc", "probe_accuracy"):
            assert len(block[key]) == n_layers and all(0.0 <= v <= 1.0 for v in block[key])
        final = block["final_layer"]
        assert final["layer"] == n_layers - 1
        lo, hi = final["heldout_accuracy_ci95"]
        assert lo <= final["heldout_accuracy"] <= hi
    assert (out / "separation.png").stat().st_size > 0
    json.dumps(metrics)  # serialisable as metrics.json


def test_directions_are_the_difference_of_the_cached_means(probe_run):
    metrics, out = probe_run
    mis = load_file(metrics["activations"]["misaligned"])["activations"].double().numpy()
    al = load_file(metrics["activations"]["aligned"])["activations"].double().numpy()
    directions = DirectionSet.load(metrics["directions"])
    assert metrics["directions"] == str(out / "directions") and directions.card["contrast"] == "models"
    vectors = directions.vectors.numpy()
    np.testing.assert_allclose(vectors, mis.mean(0) - al.mean(0), atol=1e-6)
    assert np.abs(vectors).sum() > 0  # the two fine-tunes really differ


def test_responses_contrast_splits_the_models_own_answers(micro_organisms, tmp_path):
    _, root, _ = micro_organisms
    cfg = compose_on_micro("probe", root, tmp_path, [
        "model=organism-qwen2", "capture.n_prompts=40", "separation.n_bootstrap=50", "separation.cv_folds=2",
        "probe.contrast=responses", "probe.sampling.max_new_tokens=12"])
    try:
        metrics = run_probe(cfg, tmp_path)
    except ValueError as err:  # a micro organism may answer everything one way; the refusal must say so
        assert "needs both kinds" in str(err)
        return
    from emis.activations import ActivationSet
    from emis.judges.spillover import contains_code
    acts = ActivationSet.load(metrics["activations"]["misaligned"].removesuffix(".safetensors"))
    assert acts.position == "response_mean"
    spills = np.array([contains_code(r) for r in acts.responses])
    assert metrics["n"] == {"misaligned": int(spills.sum()), "aligned": int((~spills).sum())}
    d = DirectionSet.load(metrics["directions"]).vectors.numpy()
    x = acts.activations.double().numpy()
    np.testing.assert_allclose(d, x[spills].mean(0) - x[~spills].mean(0), atol=1e-5)
