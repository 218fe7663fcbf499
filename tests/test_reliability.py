"""Bad input fails in one line with a non-zero exit and no artefact; killed sweeps resume; secrets never leak; same seed, same numbers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import MICRO, ROOT, micro_steer_overrides, run_entry
from wandb_reader import offline_runs

from emis.activations import ActivationSet
from emis.io import load_tensor_artifact
from emis.models import ModelSpec, load_model
from emis.stages.job import EXIT_USER_ERROR

pytestmark = pytest.mark.slow
HYDRA_OWN = {".hydra"}  # Hydra's record of the job; everything else in a failed job's directory is an artefact


def base_overrides(root, outputs):
    return micro_steer_overrides(root, outputs) + ["steer.alphas=[1.0]", "steer.layer=0", "logger=disabled"]


def artefacts(job_dir: Path) -> list[str]:
    """Files a job left besides Hydra's own record and its log."""
    if not job_dir.exists():
        return []
    return sorted(str(p.relative_to(job_dir)) for p in job_dir.rglob("*")
                  if p.is_file() and not HYDRA_OWN & set(p.relative_to(job_dir).parts) and p.suffix != ".log")


def error_lines(result) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if "][ERROR]" in line]


@pytest.fixture(scope="module")
def warm(micro_organisms, tmp_path_factory):
    """Micro organisms plus a steering run that fills the capture cache (reused by the bad-input runs)."""
    _, root, _ = micro_organisms
    outputs = tmp_path_factory.mktemp("outputs")
    result = run_entry("steer", base_overrides(root, outputs) + [f"hydra.run.dir={outputs / 'warm'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return root, outputs


BAD_INPUTS = {
    "missing local model path": (["model.misaligned.name=/nonexistent/organism"], "neither a local directory nor a hub id"),
    "layer out of range": (["steer.layer=7"], "out of range for a model with 2 layers"),
    # issue 20's table: each names the key, before anything loads
    "fractional layer": (["steer.layer=1.5"], "steer.layer must be an integer or 'all', got 1.5"),
    "coefficient not a number": (["steer.alphas=[abc]"], "steer.alphas[0]: Value 'abc'"),
    "malformed question file": (["eval.questions={malformed}"], "is not valid YAML"),
    "sweep with one bad point": (["-m", "steer.n_bootstrap=50,0"], "steer.n_bootstrap must be >= 1, got 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_with_exit_2_and_no_artefact(warm, tmp_path, case):
    root, outputs = warm
    extra, message = BAD_INPUTS[case]
    bad_yaml = tmp_path / "questions.yaml"
    bad_yaml.write_text("- id: q\n  paraphrases: [unclosed\n")
    flags = [e for e in extra if e.startswith("-")]  # before the overrides, as argparse wants
    extra = [e.replace("{malformed}", str(bad_yaml)) for e in extra if e not in flags]
    job = tmp_path / "job"
    result = run_entry("steer", flags + base_overrides(root, outputs) + extra + [f"hydra.run.dir={job}", f"hydra.sweep.dir={job}"])
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], lines
    assert "Traceback" not in result.stderr
    assert artefacts(job) == []


def test_missing_adapter_names_the_tool_that_trains_it(tmp_path):
    """model=qwen2.5-1.5b before its adapters exist: the fix is experiments/finetune.py, not the organism build."""
    job = tmp_path / "job"
    result = run_entry("steer", ["model=qwen2.5-1.5b", "logger=disabled", f"hydra.run.dir={job}", f"paths.outputs={tmp_path}"],
                       env={"EMIS_ADAPTERS": str(tmp_path / "adapters"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and "adapter" in lines[0] and "experiments/finetune.py" in lines[0], lines
    assert "build_organisms" not in lines[0] and "Traceback" not in result.stderr
    assert artefacts(job) == []


def _cached_captures(outputs: Path) -> list[Path]:
    return sorted((outputs / "cache" / "activations").glob("*.safetensors"))


@pytest.mark.parametrize("damage", ["truncated", "nan", "other model"])
def test_damaged_capture_cache_is_refused(warm, tmp_path, damage):
    root, outputs = warm
    scratch = tmp_path / "outputs"
    (scratch / "cache").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(outputs / "cache" / "activations"), str(scratch / "cache")], check=True)
    target = _cached_captures(scratch)[0]
    stem = target.with_suffix("")
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:100])
        message = "corrupt or truncated"
    elif damage == "nan":
        acts = ActivationSet.load(stem)
        acts.activations[0, 0, 0] = float("nan")
        acts.save(stem)  # a consistent file holding a NaN
        message = "NaN or inf"
    else:
        acts = ActivationSet.load(stem)
        acts.model = {**acts.model, "name": "/some/other/model"}
        acts.save(stem)
        message = "another model or prompt set"
    job = tmp_path / "job"
    result = run_entry("steer", base_overrides(root, scratch) + [f"hydra.run.dir={job}"])
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], lines
    assert artefacts(job) == []


def test_killed_multirun_resumes_without_recomputing_finished_points(warm, tmp_path):
    root, outputs = warm
    sweep_args = ["-m", *base_overrides(root, outputs), "steer.alphas=[1.0],[2.0],[3.0],[4.0]"]
    reference_dir = tmp_path / "uninterrupted"
    ref = run_entry("steer", sweep_args + [f"hydra.sweep.dir={reference_dir}"])
    assert ref.returncode == 0, ref.stderr[-2000:]

    sweep = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "steer.py"), *sweep_args, f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (sweep / "1" / "metrics.json").exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    assert 2 <= len(finished) < 4, finished  # killed mid-way

    again = run_entry("steer", sweep_args + [f"hydra.sweep.dir={sweep}"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("already complete") + again.stderr.count("already complete") == len(finished)
    for job, mtime in finished.items():
        assert (sweep / job / "metrics.json").stat().st_mtime_ns == mtime  # not recomputed
    for job in ("0", "1", "2", "3"):
        got = json.loads((sweep / job / "metrics.json").read_text())
        want = json.loads((reference_dir / job / "metrics.json").read_text())
        for key in ("spillover", "coherence", "reduction_points", "ci95", "controls", "verdict", "config_key"):
            assert got[key] == want[key], (job, key)


def test_secrets_never_reach_outputs_or_wandb(warm, tmp_path):
    root, outputs = warm
    secrets = {"NDIF_API_KEY": "ndif-secret-4f9a7c21", "OPENAI_API_KEY": "sk-openai-secret-77d0e1",
               "HF_TOKEN": "hf_secret_token_93bb2a", "MY_SERVICE_API_KEY": "svc-secret-1a2b3c4d"}
    job = tmp_path / "job"
    args = [a for a in base_overrides(root, outputs) if a != "logger=disabled"] + ["logger.mode=offline", f"hydra.run.dir={job}"]
    result = run_entry("steer", args, env=secrets)
    assert result.returncode == 0, result.stderr[-2000:]
    assert offline_runs(job), "the W&B offline run was not written"
    files = [p for p in job.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        data = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in data, f"{value} leaked into {path}"
    for value in secrets.values():
        assert value not in result.stdout + result.stderr


def test_same_seed_same_numbers(warm, tmp_path):
    root, _ = warm
    runs = []
    for i in range(2):
        outputs = tmp_path / f"fresh{i}"  # nothing cached: both runs compute everything
        result = run_entry("steer", base_overrides(root, outputs) + [f"hydra.run.dir={outputs / 'job'}"])
        assert result.returncode == 0, result.stderr[-2000:]
        metrics = json.loads((outputs / "job" / "metrics.json").read_text())
        for path_dependent in ("activations", "config_key"):  # both name the run's own output folder
            metrics.pop(path_dependent)
        runs.append(metrics)
    assert runs[0] == runs[1]


def test_two_identical_runs_at_once_share_one_cache(micro_organisms, tmp_path):
    """Two identical steering runs started together on one fresh cache: both succeed with the same metrics, each
    capture is computed once (the other run waits for it and reads it), and every cache file is whole."""
    _, root, _ = micro_organisms
    outputs = tmp_path / "outputs"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    runs = [subprocess.Popen([sys.executable, str(ROOT / "experiments" / "steer.py"), *base_overrides(root, outputs),
                              f"hydra.run.dir={tmp_path / f'run{i}'}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [log[-2000:] for log in logs]
    first, second = (json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()) for i in range(2))
    assert first == second and first["activations"]["misaligned"].startswith(str(outputs / "cache"))
    both = "".join(logs)
    assert both.count("activations cached:") == both.count("activations cache hit:") == 3  # three roles, once each

    files = sorted(p for p in (outputs / "cache").rglob("*") if p.is_file())
    assert {p.suffix for p in files} == {".safetensors", ".json", ".lock"} and not [p for p in files if ".tmp" in p.name]
    captures = [p for p in files if p.suffix == ".safetensors"]
    assert len(captures) == 3
    for capture in captures:
        load_tensor_artifact(capture.with_suffix(""), "activations")  # whole, and its checksum holds
    generations = [json.loads(p.read_text()) for p in files if p.suffix == ".json" and p.parent.name == "generations"]
    assert generations and all(g["answers"] and len(g["code"]) == 64 for g in generations)
    assert both.count("generations cached:") == len(generations)  # each computed by one run only
    assert all(json.loads(p.read_text()) for p in files if p.suffix == ".json")
    assert all(p.stat().st_size == 0 for p in files if p.suffix == ".lock")


def test_no_pickle_is_read_back():
    corpus_text = ROOT / "emis" / "organisms" / "code.py"  # the organisms' insecure-code corpus: data, not emis code
    sources = "\n".join(p.read_text() for p in (ROOT / "emis").rglob("*.py") if p != corpus_text)
    for forbidden in ("pickle.load", "torch.load(", "trust_remote_code=True", "np.load("):
        assert forbidden not in sources
    assert torch.__version__  # the library imports cleanly


@pytest.mark.parametrize("entry,extra,message", [
    ("build_organisms", ["organisms.build=[qwen2,nope]"], "unknown organism families ['nope']"),
    ("build_organisms", ["organisms.workers=0"], "organisms.workers must be >= 1, got 0"),
    ("finetune", ["finetune.data=/nonexistent/chat.jsonl", "finetune.model=/nonexistent/model", "dry_run=true"], "nonexistent"),
])
def test_build_and_finetune_run_through_the_job_runner(tmp_path, entry, extra, message):
    """The organisms build and the fine-tune fail like every other entry point: one line, exit 2, nothing written."""
    job = tmp_path / "job"
    result = run_entry(entry, [f"paths.outputs={tmp_path}", "logger=disabled", f"hydra.run.dir={job}", *extra], timeout=300)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], lines
    assert "Traceback" not in result.stderr and artefacts(job) == []


def _worker_pids(parent: int) -> list[int]:
    """Pids of the pool workers `parent` spawned (multiprocessing's spawn children), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"multiprocessing-fork" in cmdline:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an exited orphan the container's init may never reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killed_build_leaves_no_worker_and_reruns_cleanly(tmp_path):
    """kill -9 of the build process (not its group) while both workers train: they exit within 10 s; a half-written
    organism folder they leave is not taken for an organism, and the rerun removes it and builds."""
    root = tmp_path / "organisms"
    args = [*MICRO, "organisms.build=[qwen2,llama]", "organisms.workers=2", f"paths.organisms={root}",
            f"paths.outputs={tmp_path}", "logger=disabled"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    long = ["organisms.train.base.steps=100000", f"hydra.run.dir={tmp_path / 'killed'}"]  # still training when killed
    proc = subprocess.Popen([sys.executable, str(ROOT / "experiments" / "build_organisms.py"), *args, *long], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = b""
    os.set_blocking(proc.stderr.fileno(), False)
    deadline = time.time() + 300
    while time.time() < deadline and not (b"qwen2/base" in seen and b"llama/base" in seen):  # both bars have started
        time.sleep(0.2)
        seen += proc.stderr.read() or b""
    workers = _worker_pids(proc.pid)
    assert len(workers) == 2 and b"qwen2/base" in seen and b"llama/base" in seen, seen[-2000:]
    proc.kill()
    proc.wait()
    proc.stderr.close()
    deadline = time.time() + 10
    while time.time() < deadline and any(map(_running, workers)):
        time.sleep(0.1)
    assert not [pid for pid in workers if _running(pid)]

    # What a worker killed inside its atomic save leaves: a hidden temporary folder beside the organism's.
    half = root / "seed0" / "qwen2" / ".base.k1lled00.tmp"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    again = run_entry("build_organisms", [*args, f"hydra.run.dir={tmp_path / 'again'}"], env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"removed {half}" in again.stdout + again.stderr and not half.exists()
    assert list(root.glob("seed0/*/.*")) == []  # no temporary folder left
    metrics = json.loads((tmp_path / "again" / "metrics.json").read_text())
    for family in ("qwen2", "llama"):
        for variant, path in metrics[family]["paths"].items():
            card = json.loads((Path(path) / "card.json").read_text())
            assert (card["family"], card["variant"]) == (family, variant)
            assert load_model(ModelSpec(path, tokenizer="saved")).n_layers == 2
