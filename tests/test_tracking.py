"""W&B lifecycle: real offline runs read back from their .wandb files (no mocks of wandb)."""

import json
import sys
from pathlib import Path

import hydra
import matplotlib
import pytest
import wandb
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from emis.tracking import REDACTED, redact, track
from wandb_reader import offline_runs, read_offline_run, read_records

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
SECRET = "sk-test-123"


@pytest.fixture(autouse=True)
def offline_env(monkeypatch):
    """No W&B key or mode from the environment, and no Hydra job state left over by other tests."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)


def job_cfg(logger: str = "wandb", **extra):
    """A job config with the real conf/logger/<logger>.yaml."""
    return OmegaConf.create({"logger": OmegaConf.load(CONF / "logger" / f"{logger}.yaml"),
                             "model": {"family": "llama", "layer": 3, "tag": "${model.family}-L${model.layer}"}, **extra})


def tiny_png(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_offline_run_reads_back_as_logged(tmp_path):
    rows = [{"prompt": "Hi?", "answer": "def f(): pass", "alpha": 8.0, "spill": True},
            {"prompt": "Why?", "answer": "Because.", "alpha": 0.0, "spill": False, "coherence": 91.5}]
    (tmp_path / "report.md").write_text("# report\n")
    with track(job_cfg(), "steer", tmp_path, group="g-offline") as tracker:
        tracker.log_metrics({"final": {"acc": 0.93, "n": 12, "by_layer": [0.5, 0.75]}, "seed": 0})
        tracker.log_series("steer/spill_rate", [0.0, 4.0, 8.0], [0.1, 0.25, 0.5], "alpha")
        tracker.log_table("generations", rows)
        tracker.log_images({"separation": tiny_png(tmp_path / "sep.png")})
        tracker.log_artifact(tmp_path / "report.md", "steer report", "report")
    assert wandb.run is None

    (run_dir,) = offline_runs(tmp_path)
    run = read_offline_run(run_dir)
    assert (run["group"], run["job_type"], run["name"], run["project"], run["exit_code"]) == (
        "g-offline", "steer", "steer-llama", "emis", 0)
    assert run["config"] == {"logger": {"kind": "wandb", "project": "emis", "entity": None, "group": None, "tags": [],
                                        "mode": "auto"},
                             "model": {"family": "llama", "layer": 3, "tag": "llama-L3"}}
    summary = run["summary"]
    assert (summary["final/acc"], summary["final/n"], summary["final/by_layer"], summary["seed"]) == (0.93, 12, [0.5, 0.75], 0)
    assert [(h["alpha"], h["steer/spill_rate"]) for h in run["history"] if "steer/spill_rate" in h] == [
        (0.0, 0.1), (4.0, 0.25), (8.0, 0.5)]
    assert summary["steer/spill_rate"] == 0.5

    table = summary["generations"]
    assert (table["_type"], table["nrows"], table["ncols"]) == ("table-file", 2, 5)
    logged = json.loads((run_dir / "files" / table["path"]).read_text())
    assert logged["columns"] == ["prompt", "answer", "alpha", "spill", "coherence"]
    assert logged["data"] == [["Hi?", "def f(): pass", 8.0, True, None], ["Why?", "Because.", 0.0, False, 91.5]]

    image = summary["separation"]
    assert (image["_type"], image["width"], image["height"]) == ("image-file", 20, 20)
    assert (run_dir / "files" / image["path"]).is_file()
    artifacts = [r.artifact for r in read_records(run_dir / f"run-{run['id']}.wandb") if r.HasField("artifact")]
    assert [(a.name, a.type) for a in artifacts if a.type == "report"] == [("steer-report", "report")]


def test_secrets_are_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", SECRET)
    monkeypatch.setenv("HF_HUB_DISABLE_TOKEN", "1")  # a short flag, not a secret
    cfg = job_cfg(remote={"api_key": SECRET, "url": f"https://ndif.example/?key={SECRET}&n=1", "copy": SECRET,
                          "HF_TOKEN": "hf-abc", "Password": "pw", "n_tokens": 1, "api_key_env": "NDIF_API_KEY"})
    expected = {"api_key": REDACTED, "url": f"https://ndif.example/?key={REDACTED}&n=1", "copy": REDACTED,
                "HF_TOKEN": REDACTED, "Password": REDACTED, "n_tokens": 1, "api_key_env": "NDIF_API_KEY"}
    assert redact(cfg)["remote"] == expected
    assert redact(["x", (f"error: {SECRET}", 1)]) == ["x", (f"error: {REDACTED}", 1)]

    with track(cfg, "probe", tmp_path, group="g-secret") as tracker:
        tracker.log_table("errors", [{"message": f"401 for key {SECRET}"}])
    (run_dir,) = offline_runs(tmp_path)
    assert read_offline_run(run_dir)["config"]["remote"] == expected
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert list(run_dir.glob("run-*.wandb"))[0].stat().st_size > 0


def test_run_is_finished_on_error_and_next_run_is_new(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with track(job_cfg(), "probe", tmp_path, group="g-shared") as tracker:
            tracker.log_metrics({"before": 1})
            raise RuntimeError("boom")
    assert wandb.run is None
    with track(job_cfg(), "probe", tmp_path, group="g-shared") as tracker:
        tracker.log_metrics({"after": 2})

    runs = sorted((read_offline_run(d) for d in offline_runs(tmp_path)), key=lambda r: r["exit_code"])
    assert len(runs) == 2 and runs[0]["id"] != runs[1]["id"]
    assert [r["exit_code"] for r in runs] == [0, 1]
    assert [r["group"] for r in runs] == ["g-shared", "g-shared"]
    assert (runs[1]["summary"]["before"], "after" in runs[1]["summary"]) == (1, False)
    assert runs[0]["summary"]["after"] == 2


def test_group_derived_from_out_dir(tmp_path):
    out = tmp_path / "2026-01-01_00-00-00"
    with track(job_cfg(), "transfer", out):
        pass
    assert read_offline_run(offline_runs(out)[0])["group"] == "transfer-2026-01-01_00-00-00"


@pytest.mark.parametrize("cfg", [job_cfg("disabled"), OmegaConf.create({"model": {"family": "llama"}}),
                                 OmegaConf.merge(job_cfg(), {"logger": {"mode": "disabled"}})],
                         ids=["kind-disabled", "no-logger", "mode-disabled"])
def test_disabled_writes_nothing(tmp_path, cfg):
    with track(cfg, "probe", tmp_path / "out") as tracker:
        tracker.log_metrics({"a": {"b": 1}})
        tracker.log_series("s", [0, 1], [1, 2], "alpha")
        tracker.log_table("t", [{"x": 1}])
        tracker.log_images({"missing": tmp_path / "missing.png"})
        tracker.log_artifact(tmp_path / "missing.md", "report", "report")
        assert tracker.run is None and wandb.run is None
    assert not tracker.enabled
    assert list(tmp_path.rglob("*")) == []


def test_hydra_multirun_jobs_share_a_group(tmp_path, monkeypatch):
    """The basic launcher runs both jobs in this process: each gets its own finished run, one group."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text(f"""
defaults:
  - logger: wandb
  - override hydra/job_logging: none
  - override hydra/hydra_logging: none
  - _self_
model:
  family: llama
hydra:
  searchpath: [file://{CONF}]
  sweep:
    dir: {tmp_path}/multirun/${{now:%Y-%m-%d_%H-%M-%S}}
    subdir: ${{hydra.job.num}}
  job:
    chdir: false
""")

    @hydra.main(version_base="1.3", config_path=str(tmp_path / "conf"), config_name="app")
    def app(cfg):
        with track(cfg, "probe", HydraConfig.get().runtime.output_dir) as tracker:
            tracker.log_metrics({"family": cfg.model.family})

    monkeypatch.setattr(sys, "argv", ["app", "-m", "model.family=llama,qwen2"])
    try:
        app()
    finally:
        GlobalHydra.instance().clear()
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    runs = [read_offline_run(offline_runs(sweep_dir / str(num))[0]) for num in (0, 1)]
    assert [r["name"] for r in runs] == ["probe-llama-0", "probe-qwen2-1"]
    assert [r["group"] for r in runs] == [f"probe-{sweep_dir.name}"] * 2
    assert [r["summary"]["family"] for r in runs] == ["llama", "qwen2"]
    assert runs[0]["id"] != runs[1]["id"] and [r["exit_code"] for r in runs] == [0, 0]
