"""benchmarks/peers.py in a tiny mode: the document's structure, and emis equal to steering-vectors and repeng
(no timings asserted). `make test` installs both peers first."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("steering_vectors", reason="the peers install with `make test` (.venv/.peers-installed)")
pytest.importorskip("gguf", reason="the peers install with `make test` (.venv/.peers-installed)")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import peers  # noqa: E402
from benchmarks.run import ModelShape, prepare_model  # noqa: E402
from emis.organisms.families import ArchSize  # noqa: E402

# Wide enough init that greedy answers vary token to token, so a steering applied in the prefill only would show.
MICRO = ModelShape("micro-llama", ArchSize(64, 2, 4, 2, 128, 320, 128), "float32", tokenizer_vocab=320, init_range=0.3,
                   tokenizer="saved", family="llama")
MICRO_BF16 = replace(MICRO, name="micro-llama-bf16", dtype="bfloat16")
TINY = peers.PeerPlan(reps=1, warmup=0, capture_prompts=3, gen_prompts=2, gen_tokens=4, sweep_prompts=1, sweep_tokens=3)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    cache = tmp_path_factory.mktemp("peer_models")
    out = cache / "peers.json"
    doc = peers.run_peers([MICRO, MICRO_BF16], {MICRO.name: TINY, MICRO_BF16.name: TINY}, threads=1, cache=cache,
                          command="test", out=out)
    return doc, out


@pytest.fixture(scope="module")
def doc(written):
    return written[0]


def checks(doc, peer, bench, shape=MICRO.name):
    return doc["benchmarks"][peer][bench][shape]["checks"]


def test_document_is_written_as_returned(written):
    doc, out = written
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    assert doc["complete"] is True


def test_every_ratio_of_both_peers_on_both_shapes(doc):
    assert set(doc["ratios"]) == set(peers.PEERS)
    for peer in peers.PEERS:
        assert set(doc["ratios"][peer]) == set(peers.BENCHMARK_KEYS)
        for bench in peers.BENCHMARK_KEYS:
            for shape in (MICRO.name, MICRO_BF16.name):
                r = doc["ratios"][peer][bench][shape]
                if (peer, bench) == ("repeng", "ablate_generate"):
                    assert "no ablation" in r["skipped"]
                    continue
                assert {"median", "min", "max", "n", "per_rep", "cpu", "le_1", "equal"} <= set(r)
                assert r["n"] == TINY.reps and r["min"] <= r["median"] <= r["max"] and r["median"] > 0
                assert r["le_1"] == (r["median"] <= 1.0)
                timings = doc["benchmarks"][peer][bench][shape]["timings_s"]
                assert set(timings) == {"emis", peer} and all(len(t) == TINY.reps for t in timings.values())
    assert doc["peers"]["versions"]["steering-vectors"] == peers.PINNED["steering-vectors"]
    assert doc["peers"]["versions"]["repeng"] == peers.PINNED["repeng"]
    assert doc["machine"]["torch_threads"] == 1


def test_float32_captures_are_identical_and_steered_tokens_equal_each_peer(doc):
    for peer in peers.PEERS:
        assert checks(doc, peer, "capture_all_layers")["equal"]
        steered = checks(doc, peer, "steered_generate")
        assert steered["tokens_equal"] and steered["steering_changed_tokens"] and steered["same_steps"]
        assert steered["prefill_only_differs"]  # the check would catch a hook that steers the prefill only
        sweep = checks(doc, peer, "sweep_k8")
        assert sweep["tokens_equal"] and sweep["rows_equal"] == sweep["rows"] == len(peers.SWEEP_COEFFICIENTS) * TINY.sweep_prompts
    assert checks(doc, "steering-vectors", "capture_all_layers")["max_abs_diff"] == 0.0
    ablate = checks(doc, "steering-vectors", "ablate_generate")
    assert ablate["tokens_equal"] and ablate["steering_changed_tokens"]
    assert checks(doc, "steering-vectors", "sweep_k8")["emis_batched_equals_separate"]


def test_bfloat16_steering_is_bit_identical_and_ablation_equal_with_the_operator_in_float32(doc):
    shape = MICRO_BF16.name
    for peer in peers.PEERS:
        assert checks(doc, peer, "steered_generate", shape)["tokens_equal"]
        assert checks(doc, peer, "sweep_k8", shape)["tokens_equal"]  # powers-of-two coefficients: exact in bf16
        assert checks(doc, peer, "capture_all_layers", shape)["equal_unpadded_rows"]
    assert checks(doc, "steering-vectors", "capture_all_layers", shape)["equal"]
    assert checks(doc, "steering-vectors", "ablate_generate", shape)["tokens_equal_operator_in_float32"]


def test_repeng_imports_under_numpy_2_without_leaving_the_alias(tmp_path):
    repeng = peers.import_repeng()
    assert hasattr(repeng, "ControlModel") and not hasattr(np, "float_")


def test_repeng_wrapper_comes_off_the_plain_copy(tmp_path):
    model, _ = prepare_model(MICRO, tmp_path, tmp_path)
    case = peers.make_case(model, TINY)
    layer = type(case.hf.model.layers[case.layer])
    with peers.open_peer("repeng", case):
        assert type(case.hf.model.layers[case.layer]).__name__ == "ControlModule"
    assert type(case.hf.model.layers[case.layer]) is layer
