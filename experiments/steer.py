"""Steering with the EM direction, a coefficient sweep and matched controls, for one model pair (Hydra entry point)."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from emis.io import atomic_write_json
from emis.steer import run_steer

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="steer")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    metrics = run_steer(cfg, out)
    atomic_write_json(out / "metrics.json", metrics)
    log.info("%s: %.1f points (CI %.1f..%.1f) at layer %d, α=%g: %s; metrics in %s", cfg.model.family,
             metrics["reduction_points"], *metrics["ci95"], metrics["layer"], metrics["best"]["alpha"], metrics["verdict"], out)


if __name__ == "__main__":
    main()
