"""Capture, difference-in-means directions and separation by layer for one model pair. (Hydra entry point)"""

import hydra
from omegaconf import DictConfig

from emis.stages.job import run_job
from emis.stages.probe import run_probe


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_probe)


if __name__ == "__main__":
    main()
