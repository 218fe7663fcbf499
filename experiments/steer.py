"""Steering with the EM direction: a coefficient sweep by layer and matched controls, for one model pair. (Hydra entry point)"""

import hydra
from omegaconf import DictConfig

from emis.stages.job import run_job
from emis.stages.steer import run_steer


@hydra.main(version_base="1.3", config_path="../conf", config_name="steer")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_steer)


if __name__ == "__main__":
    main()
