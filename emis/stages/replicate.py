"""The study end to end on the configured models: organisms, separation, steering with controls, transfer, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emis.report import write_report
from emis.stages.organisms import run_build_organisms
from emis.stages.probe import run_probe
from emis.stages.steer import run_steer
from emis.stages.transfer import run_transfer
from emis.workers import run_jobs

log = logging.getLogger(__name__)


def for_model(cfg: DictConfig, name: str) -> DictConfig:
    """The config with `model` set to `models[name]`, every interpolation resolved (so it means the same in a worker
    process, where Hydra's runtime is not set)."""
    sub = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "model"])
    sub.model = cfg.models[name]
    OmegaConf.resolve(sub)
    return sub


def probe_and_steer(name: str, cfg: DictConfig, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model `name`'s probe and steering stages, their figures under out/probe/<name> and out/steer/<name>."""
    log.info("replicate: %s", name)
    return run_probe(cfg, _dir(out / "probe" / name)), run_steer(cfg, _dir(out / "steer" / name))


def run_replicate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Every stage in order; each writes its figures under `out/<stage>/<model>`; report.md and all numbers returned.
    The models' probe and steering stages run in `replicate.workers` parallel processes (`emis.workers`)."""
    names = list(cfg.transfer.models)
    organisms = run_build_organisms(cfg, out) if cfg.replicate.build_organisms else {}
    jobs = {name: (name, for_model(cfg, name), out) for name in names}
    stages = run_jobs(probe_and_steer, jobs, int(cfg.replicate.workers), "replicate")
    probe = {name: stages[name][0] for name in names}
    steer = {name: stages[name][1] for name in names}
    transfer = run_transfer(cfg, _dir(out / "transfer"))
    metrics = {"organisms": organisms, "probe": probe, "steer": steer, "transfer": transfer}
    figures = {f"separation by layer, {n}": f"probe/{n}/separation.png" for n in names}
    figures |= {f"steering curve, {n}": f"steer/{n}/steering.png" for n in names}
    figures["transfer matrix"] = "transfer/transfer_matrix.png"
    write_report(out / "report.md", metrics, figures)
    return metrics


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
