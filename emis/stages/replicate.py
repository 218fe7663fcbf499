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

log = logging.getLogger(__name__)


def for_model(cfg: DictConfig, name: str) -> DictConfig:
    """The config with `model` set to `models[name]`."""
    sub = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "model"])
    sub.model = cfg.models[name]
    return sub


def run_replicate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Every stage in order; each writes its figures under `out/<stage>/<model>`; report.md and all numbers returned."""
    names = list(cfg.transfer.models)
    organisms = run_build_organisms(cfg, out) if cfg.replicate.build_organisms else {}
    probe, steer = {}, {}
    for name in names:
        log.info("replicate: %s", name)
        probe[name] = run_probe(for_model(cfg, name), _dir(out / "probe" / name))
        steer[name] = run_steer(for_model(cfg, name), _dir(out / "steer" / name))
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
