"""Capture, difference-in-means directions and separation by layer for one model pair (Hydra entry point)."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from emis.io import atomic_write_json
from emis.probe import run_probe

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    metrics = run_probe(cfg, out)
    atomic_write_json(out / "metrics.json", metrics)
    log.info("final layer held-out accuracy %.3f (control %.3f); metrics in %s",
             metrics["final_layer"]["heldout_accuracy"], metrics["control"]["final_layer"]["heldout_accuracy"], out)


if __name__ == "__main__":
    main()
