"""Steering with the EM direction: a coefficient sweep by layer and matched controls, for one model pair. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job
from emis.stages.steer import run_steer


@entry_point("steer")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_steer)


if __name__ == "__main__":
    main()
