"""Hydra multiruns of the steering entry point: 2 layers x 2 alphas, basic and submitit_local launchers, W&B offline.

Each job must land in its own W&B run, all in the sweep's group, and the metrics read back from the offline
run files must equal the job's metrics.json."""

import json

import pytest

from conftest import micro_steer_overrides, run_entry
from wandb_reader import offline_runs, read_offline_run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("launcher", ["basic", "submitit_local"])
def test_sweep_of_layers_and_alphas_gives_one_wandb_run_per_job(micro_organisms, tmp_path, launcher):
    _, root, _ = micro_organisms
    sweep = tmp_path / "sweep"
    args = ["-m", *micro_steer_overrides(root, tmp_path / "outputs"), "logger.mode=offline", "steer.layer=0,1",
            "steer.alphas=[1.0],[4.0]", f"hydra.sweep.dir={sweep}", f"hydra/launcher={launcher}"]
    if launcher == "submitit_local":
        args += ["hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"]
    result = run_entry("steer", args)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 4
    seen = set()
    groups = set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        runs = offline_runs(job)
        assert len(runs) == 1, f"{job}: {runs}"
        run = read_offline_run(runs[0])
        seen.add(run["id"])
        groups.add(run["group"])
        assert run["job_type"] == "steer"
        summary = run["summary"]
        assert summary["reduction_points"] == pytest.approx(metrics["reduction_points"])
        assert summary["best/alpha"] == metrics["best"]["alpha"]
        assert summary["best/layer"] == metrics["best"]["layer"]
        assert summary["verdict"] == metrics["verdict"]
        for alpha, value in metrics["spillover"].items():
            assert summary[f"spillover/{alpha}"] == pytest.approx(value)
        cfg = run["config"]
        point = (cfg["steer"]["layer"], tuple(cfg["steer"]["alphas"]))
        assert point in {(0, (1.0,)), (1, (1.0,)), (0, (4.0,)), (1, (4.0,))}
        seen.add(point)
    assert len(seen) == 8  # four distinct runs and four distinct sweep points
    assert len(groups) == 1 and next(iter(groups))
