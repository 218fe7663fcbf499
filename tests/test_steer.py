"""The steering stage end to end on micro organisms: metrics fields, numbers recomputed from its own generations."""

import json

import numpy as np
import pytest
from conftest import compose_on_micro
from emis.judges.spillover import contains_code
from emis.specificity import SPECIFIC, NOT_SPECIFIC
from emis.steer import best_point, resolve_layers, run_steer


@pytest.fixture(scope="module")
def steer_run(micro_organisms, tmp_path_factory):
    _, root, _ = micro_organisms
    out = tmp_path_factory.mktemp("steer")
    cfg = compose_on_micro("steer", root, out, [
        "model=organism-qwen2", "capture.n_prompts=16", "steer.n_prompts=12", "steer.alphas=[1.0,4.0]",
        "steer.mode=subtract", "steer.sampling.max_new_tokens=6", "steer.controls.n_random=3",
        "steer.controls.n_orthogonal=2", "steer.controls.n_shuffled=2", "steer.n_bootstrap=100"])
    return run_steer(cfg, out), out


def test_metrics_fields_and_numbers_from_the_generations(steer_run):
    metrics, out = steer_run
    assert metrics["alphas"] == [0.0, 1.0, 4.0] and metrics["layers"] == [0, 1]
    best = metrics["best"]
    assert set(best) >= {"alpha", "layer", "spillover"}
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert {r["layer"] for r in rows} == {best["layer"]}
    by_alpha = {a: np.array([contains_code(r["answer"]) for r in rows if r["alpha"] == a], float) for a in metrics["alphas"]}
    for a, flags in by_alpha.items():
        assert len(flags) == 12
        assert metrics["spillover"][f"{a:g}"] == pytest.approx(flags.mean())
    assert metrics["reduction_points"] == pytest.approx(100 * (by_alpha[0.0].mean() - by_alpha[best["alpha"]].mean()))
    lo, hi = metrics["ci95"]
    assert lo <= metrics["reduction_points"] <= hi
    assert metrics["coherence"]["0"] == pytest.approx(1.0)
    assert set(metrics["controls"]) == {"random", "orthogonal", "wrong_layer", "shuffled_label", "secure_vs_base"}
    assert len(metrics["controls"]["random"]["effects"]) == 3
    expected = SPECIFIC if lo > 0 and all(metrics["reduction_points"] > c["p95"] for c in metrics["controls"].values()) else NOT_SPECIFIC
    assert metrics["verdict"] == expected
    assert (out / "steering.png").stat().st_size > 0
    json.dumps(metrics)


def test_best_point_respects_the_coherence_tolerance():
    alphas = [0.0, 1.0, 2.0]
    spill = {0: [0.5, 0.2, 0.0], 1: [0.5, 0.3, 0.1]}
    coherence = {0: [1.0, 0.95, 0.5], 1: [1.0, 0.92, 0.91]}
    assert best_point(alphas, spill, coherence, 0.10) == (1, 2)
    assert best_point(alphas, spill, coherence, 0.01) == (0, 0)


def test_layers_resolve_and_refuse_out_of_range():
    assert resolve_layers("all", 3) == [0, 1, 2]
    assert resolve_layers(-1, 3) == [2]
    assert resolve_layers([2, 0, -3], 3) == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(3, 3)
