"""Build the embedded default: the four families' model organisms (base, secure, insecure) and their metrics."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from emis.io import atomic_write_json
from emis.organisms.build import build_all

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build_organisms")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    metrics = build_all(cfg.organisms, Path(cfg.paths.organisms).expanduser())
    atomic_write_json(out / "metrics.json", metrics)
    log.info("metrics written to %s", out / "metrics.json")


if __name__ == "__main__":
    main()
