"""The probe stage end to end on micro organisms: metrics fields, directions equal the cached activations by hand."""

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from conftest import CONF, MICRO, ROOT
from emis.probe import run_probe


@pytest.fixture(scope="module")
def probe_run(micro_organisms, tmp_path_factory):
    _, root, _ = micro_organisms
    out = tmp_path_factory.mktemp("probe")
    overrides = [o for o in MICRO if o.startswith("organisms.corpus")]
    overrides += [f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={out}", "model=organism-gemma2",
                  "capture.n_prompts=12", "separation.n_bootstrap=50", "separation.cv_folds=2"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("probe", overrides=overrides)
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
    vectors = load_file(out / "directions.safetensors")["vectors"].numpy()
    np.testing.assert_allclose(vectors, mis.mean(0) - al.mean(0), atol=1e-6)
    assert np.abs(vectors).sum() > 0  # the two fine-tunes really differ
