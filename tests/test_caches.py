"""Every cache knows the code that produced an entry: an entry of other code (or of an emis that recorded none) is
recomputed with one log line saying why; entries of the current code are reused; concurrent writers never clash."""

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import CONF, MICRO, ROOT
from hydra import compose, initialize_config_dir
from test_models import build_micro

import emis.activations
import emis.sweep
from emis.activations import capture_cached
from emis.generation import Steering
from emis.io import atomic_dir, code_fingerprint
from emis.models import ModelSpec, load_model
from emis.organisms.build import VARIANTS, build_all
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.stages.job import completed
from emis.sweep import cached_generations

PRODUCER = "emis_test_producer"
VERSION_1 = "SCALE = 1\n\n\ndef scaled(x):\n    return SCALE * x\n"
# The same code with a docstring, comments and another layout.
RESTYLED = '"""A producing module."""\nSCALE = 1  # the scale\n\n\ndef scaled(x):\n    """Scaled."""\n    return (SCALE\n            * x)\n'
VERSION_2 = "SCALE = 2\n\n\ndef scaled(x):\n    return SCALE * x\n"
RECOMPUTING = "recomputing: produced by other code"


def recompute_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if RECOMPUTING in r.getMessage()]


def test_fingerprint_sees_code_and_data_not_comments_docstrings_or_layout(tmp_path, monkeypatch):
    package = tmp_path / "emis_test_package"
    package.mkdir()
    module, table = package / "maths.py", package / "table.yaml"
    module.write_text(VERSION_1)
    table.write_text("sizes: [1, 2]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    name = "emis_test_package.maths"
    first, whole = code_fingerprint(name), code_fingerprint(package.name)
    module.write_text(RESTYLED)
    table.write_text("# sizes of things\nsizes:\n  - 1\n  - 2\n")
    assert (code_fingerprint(name), code_fingerprint(package.name)) == (first, whole)
    table.write_text("sizes: [1, 3]\n")
    assert code_fingerprint(name) == first and code_fingerprint(package.name) != whole  # a package holds its data
    module.write_text(VERSION_2)
    assert code_fingerprint(name) != first
    assert code_fingerprint("emis.activations", "emis.models") != code_fingerprint("emis.activations")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(ModelSpec(str(build_micro("qwen2", tmp_path_factory.mktemp("micro") / "qwen2"))))


@pytest.fixture
def producer(tmp_path, monkeypatch) -> Path:
    """A module the capture and generation caches count among their producing code: editing it changes that code."""
    folder = tmp_path / "producer"
    folder.mkdir()
    path = folder / f"{PRODUCER}.py"
    path.write_text(VERSION_1)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(emis.activations, "CAPTURE_CODE", (*emis.activations.CAPTURE_CODE, PRODUCER))
    monkeypatch.setattr(emis.sweep, "GENERATION_CODE", (*emis.sweep.GENERATION_CODE, PRODUCER))
    return path


def counting(monkeypatch, module, name: str) -> list[int]:
    """Count the calls of `module.name` (the real function still runs)."""
    calls: list[int] = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_capture_cache_recomputes_what_other_code_produced(model, producer, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    captures = counting(monkeypatch, emis.activations, "capture_residuals")
    prompts = [chat_prompt(model.tokenizer, q) for q in ("Hi", "How are you today?", "def add(x, y)")]

    def capture():
        return capture_cached(model, prompts, "all", "last_prompt", tmp_path / "activations", progress=False)

    first, path = capture()
    tensor, sidecar = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    old = json.loads(sidecar.read_text())["code"]
    assert old == first.code == code_fingerprint(*emis.activations.CAPTURE_CODE)
    inode = tensor.stat().st_ino
    for source in (VERSION_1, RESTYLED):  # the same code: the entry is reused
        producer.write_text(source)
        again, again_path = capture()
        assert again_path == path and torch.equal(again.activations, first.activations)
    assert len(captures) == 1 and tensor.stat().st_ino == inode and recompute_lines(caplog) == []

    producer.write_text(VERSION_2)
    recaptured, again_path = capture()
    new = json.loads(sidecar.read_text())["code"]
    assert len(captures) == 2 and again_path == path and tensor.stat().st_ino != inode  # captured and written anew
    assert new == recaptured.code != old and torch.equal(recaptured.activations, first.activations)
    assert recompute_lines(caplog) == [f"activations cache {path}: {RECOMPUTING} (fingerprint {old[:12]}..., now {new[:12]}...)"]

    meta = json.loads(sidecar.read_text())
    del meta["code"]  # as an emis that recorded no fingerprint saved it
    sidecar.write_text(json.dumps(meta))
    caplog.clear()
    capture()
    assert len(captures) == 3 and json.loads(sidecar.read_text())["code"] == new
    assert recompute_lines(caplog) == [f"activations cache {path}: {RECOMPUTING} (fingerprint none, now {new[:12]}...)"]
    assert capture()[0].code == new and len(captures) == 3


def test_generation_cache_recomputes_what_other_code_produced(model, producer, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    generations = counting(monkeypatch, emis.sweep, "generate_steered")
    prompts = [chat_prompt(model.tokenizer, q) for q in ("Hi", "Tell me about Paris")]
    steerings = [Steering({1: torch.linspace(-1, 1, model.d_model)}, a) for a in (0.0, 2.0)]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=5, batch_size=4, seed=3)
    cache = tmp_path / "generations"

    def generate():
        return cached_generations(model, model, prompts, steerings, sampling, cache)

    first, surprise = generate()
    (path,) = cache.glob("*.json")
    old = json.loads(path.read_text())["code"]
    assert old == code_fingerprint(*emis.sweep.GENERATION_CODE)
    inode = path.stat().st_ino
    for source in (VERSION_1, RESTYLED):
        producer.write_text(source)
        again, again_surprise = generate()
        assert again.tokens == first.tokens and all((a == b).all() for a, b in zip(again_surprise, surprise))
    assert len(generations) == 1 and path.stat().st_ino == inode and recompute_lines(caplog) == []

    producer.write_text(VERSION_2)
    regenerated, _ = generate()
    new = json.loads(path.read_text())["code"]
    assert len(generations) == 2 and path.stat().st_ino != inode and new != old
    assert regenerated.tokens == first.tokens and regenerated.write_norms == first.write_norms  # the same numbers again
    assert recompute_lines(caplog) == [f"generations cache {path}: {RECOMPUTING} (fingerprint {old[:12]}..., now {new[:12]}...)"]
    assert list(cache.glob("*.json")) == [path]


def test_a_finished_job_of_other_code_is_run_again(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    metrics = {"reduction_points": 12.5, "config_key": "k", "code": "c" * 64}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert completed(tmp_path, "k", "c" * 64) == metrics
    assert completed(tmp_path, "other config", "c" * 64) is None
    assert recompute_lines(caplog) == []  # another config is simply another job
    assert completed(tmp_path, "k", "d" * 64) is None
    del metrics["code"]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert completed(tmp_path, "k", "d" * 64) is None
    path = tmp_path / "metrics.json"
    assert recompute_lines(caplog) == [f"finished job {path}: {RECOMPUTING} (fingerprint cccccccccccc..., now dddddddddddd...)",
                                       f"finished job {path}: {RECOMPUTING} (fingerprint none, now dddddddddddd...)"]


def test_organisms_built_without_a_fingerprint_are_rebuilt_once(tmp_path, caplog):
    """Cards of an emis that recorded no code fingerprint count as other code: rebuilt (and re-evaluated), then reused."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("build_organisms", overrides=MICRO + [f"paths.organisms={tmp_path}", f"paths.root={ROOT}",
                                                             "organisms.build=[qwen2]"]).organisms
    first = build_all(cfg, tmp_path)
    family = tmp_path / "seed0" / "qwen2"
    weights = {v: (family / v / "model.safetensors").stat().st_ino for v in VARIANTS}
    for v in VARIANTS:
        card = json.loads((family / v / "card.json").read_text())
        assert len(card["code"]) == len(card["eval_code"]) == 64
        (family / v / "card.json").write_text(json.dumps({k: x for k, x in card.items() if k not in ("code", "eval_code")}))
    caplog.set_level(logging.INFO)
    again = build_all(cfg, tmp_path)
    assert recompute_lines(caplog) == [f"organism {family / v}: {RECOMPUTING} (fingerprint none, now {code[:12]}...)"
                                       for v, code in ((v, json.loads((family / v / "card.json").read_text())["code"])
                                                       for v in VARIANTS)]
    assert all((family / v / "model.safetensors").stat().st_ino != weights[v] for v in VARIANTS)  # built anew
    assert again["qwen2"]["spillover"] == first["qwen2"]["spillover"]  # by the same code, the same organisms
    caplog.clear()
    rebuilt = {v: (family / v / "model.safetensors").stat().st_ino for v in VARIANTS}
    build_all(cfg, tmp_path)
    assert recompute_lines(caplog) == [] and {v: (family / v / "model.safetensors").stat().st_ino for v in VARIANTS} == rebuilt


def test_atomic_dir_survives_writers_finishing_the_same_folder_at_once(tmp_path):
    """Eight writers swap in their own complete folder at the same moment, ten times over: none fails, one whole
    folder stays, nothing temporary is left."""
    target = tmp_path / "entry"

    def write(i: int, ready: threading.Barrier) -> None:
        with atomic_dir(target) as tmp:
            for k in range(20):
                (tmp / f"{k}.txt").write_text(str(i))
            ready.wait()

    for _ in range(10):
        ready = threading.Barrier(8)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8), [ready] * 8))
        assert os.listdir(tmp_path) == ["entry"] and len({(target / f"{k}.txt").read_text() for k in range(20)}) == 1
