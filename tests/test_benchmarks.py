"""benchmarks/run.py in a tiny mode: the results document's structure, and emis equal to its raw baselines (no timings asserted)."""

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import crn_noise  # noqa: E402
from benchmarks import run as bench  # noqa: E402
from emis.activations import capture_residuals  # noqa: E402
from emis.generation import Steering, generate_steered  # noqa: E402
from emis.organisms.families import ArchSize  # noqa: E402
from emis.organisms.sample import SamplingConfig  # noqa: E402

MICRO = bench.ModelShape("micro", ArchSize(32, 2, 2, 1, 64, 320, 128), "float32", tokenizer_vocab=320, init_range=0.1,
                         tokenizer="saved")
TINY = bench.Plan(reps=1, warmup=0, capture_prompts=3, gen_prompts=2, gen_tokens=4, sweep_k=3, sweep_prompts=2,
                  sweep_tokens=3, side_prompts=2, recapture_reps=1, fresh_baseline=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench_models")


@pytest.fixture(scope="module")
def micro(cache):
    model, _ = bench.prepare_model(MICRO, cache, cache)
    return model


@pytest.fixture(scope="module")
def written(cache, micro):
    out = cache / "results.json"
    return bench.run_suite([MICRO], {"micro": TINY}, threads=1, cache=cache, command="test", out=out), out


@pytest.fixture(scope="module")
def doc(written):
    return written[0]


def test_results_are_written_as_returned(written):
    doc, out = written
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))


def test_results_document_structure(doc):
    assert set(doc["ratios"]) == set(bench.RATIO_KEYS)
    for key in bench.RATIO_KEYS:
        r = doc["ratios"][key]["micro"]
        assert {"median", "min", "max", "q1", "q3", "n", "per_rep", "goal", "met", "cpu"} <= set(r)
        assert r["n"] == len(r["per_rep"]) == TINY.reps
        assert r["min"] <= r["median"] <= r["max"] and r["median"] > 0
        assert r["goal"] == bench.GOALS[key]
        timings = doc["benchmarks"][key]["micro"]["timings_s"]
        assert all(len(t) == TINY.reps and min(t) > 0 for name, t in timings.items() if name != "recapture_per_layer")
    machine = doc["machine"]
    assert machine["torch_threads"] == 1 and machine["cpu_count"] >= 1
    assert set(machine["versions"]) == {"torch", "transformers", "nnsight"}
    assert doc["models"]["micro"]["plan"]["reps"] == TINY.reps
    assert doc["end_to_end"]["status"] in {"missing", "read", "unreadable"}
    assert doc["complete"] is True and doc["quick"] is False


def test_benchmark_checks_find_emis_equal_to_the_baselines(doc):
    b = doc["benchmarks"]
    assert b["capture_vs_hooks"]["micro"]["checks"]["max_abs_diff"] <= 1e-5
    steered = b["steered_vs_plain"]["micro"]["checks"]
    assert steered["alpha0_equals_plain"] and steered["steered_equals_hook"]
    assert b["sweep_batched_vs_separate"]["micro"]["checks"]["batched_equals_separate"]
    assert b["layer_sweep_vs_single"]["micro"]["checks"]["reuse_equals_single_layer_max_abs_diff"] <= 1e-5
    assert "recapture_per_layer" in b["layer_sweep_vs_single"]["micro"]["timings_s"]


def test_capture_equals_the_hook_capture(micro):
    prompts = bench.prompts_for(micro, bench.QUESTIONS, 3)
    with torch.no_grad():
        ours = capture_residuals(micro, prompts, "all", "last_prompt", batch_size=3, progress=False).activations
    ref = bench.hook_capture(micro, prompts)
    assert ours.shape == ref.shape == (3, MICRO.size.num_layers, MICRO.size.hidden_size)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_alpha_zero_steering_equals_plain_generate_and_alpha_equals_the_raw_hook(micro):
    prompts = bench.prompts_for(micro, bench.QUESTIONS, 3)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=5, batch_size=3, seed=0)
    v = bench.steering_vector(micro, 0, 1, prompts)
    stops = bench.stop_ids(micro)
    zero = generate_steered(micro, prompts, [Steering({1: v}, 0.0)], cfg, progress=False).tokens[0]
    assert zero == bench.cut(bench.plain_generate(micro, prompts, 5), stops)
    steered = generate_steered(micro, prompts, [Steering({1: v}, 2.0)], cfg, progress=False).tokens[0]
    assert steered == bench.cut(bench.plain_generate(micro, prompts, 5, (1, v, 2.0)), stops)
    assert steered != zero


def test_crn_noise_summary_by_hand():
    d = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    got = crn_noise.summarise(d)
    per_repeat = [50.0, 50.0, 25.0]
    assert got.reduction_points == pytest.approx(statistics.mean(per_repeat))
    assert got.sd_over_replicates == pytest.approx(statistics.stdev(per_repeat))
    se = statistics.mean(statistics.stdev(row) / 2 for row in d.tolist()) * 100
    assert got.se_within == pytest.approx(se)


def test_common_noise_leaves_an_arm_that_changes_nothing_without_noise(micro):
    """Planted: the steered arm is its own zero-coefficient twin, so under common random numbers every answer pair is
    identical (reduction, SE and spread exactly 0); sampled with another seed the two arms differ."""
    prompts = bench.prompts_for(micro, bench.QUESTIONS, 6)
    arm = Steering({1: torch.ones(micro.d_model)}, 0.0)
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=6, batch_size=64, seed=0)
    noise = crn_noise.paired_noise(micro, prompts, arm, 4, cfg, judge=lambda answer: len(answer) % 2 == 0)
    assert noise["common"] == crn_noise.PairedNoise(0.0, 0.0, 0.0)
    assert noise["independent"].se_within > 0 and noise["independent"].sd_over_replicates > 0


def test_ratio_summary_and_interleaving_order():
    r = bench.ratio([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])
    assert r["per_rep"] == [2.0, 3.0, 2.0] and r["median"] == 2.0 and r["min"] == 2.0 and r["max"] == 3.0
    calls = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a"]  # warm-up, then alternating order
    assert {len(v) for v in times["wall"].values()} == {len(v) for v in times["cpu"].values()} == {2}


def test_recorded_end_to_end_reads_the_file_when_present(tmp_path):
    path = tmp_path / "e2e.json"
    assert bench.recorded_end_to_end(path)["status"] == "missing"
    path.write_text(json.dumps({"pipeline_s": 12.5}))
    assert bench.recorded_end_to_end(path) == {"status": "read", "path": str(path), "timings": {"pipeline_s": 12.5}}
    path.write_text("{not json")
    assert bench.recorded_end_to_end(path)["status"] == "unreadable"


def test_a_failed_end_to_end_run_names_its_log_and_writes_nothing(tmp_path):
    e2e, results = tmp_path / "e2e.json", tmp_path / "results.json"
    with pytest.raises(RuntimeError, match=r"end-to-end run failed \(exit 2\).*organisms.build=\[nope\].*unknown organism "
                                           r"families.*cold_build.log"):
        bench.run_end_to_end("nope", tmp_path / "organisms", tmp_path / "outputs", results, e2e=e2e)
    assert not e2e.exists() and not results.exists()
