"""Steering with the EM direction: a coefficient sweep by layer and matched controls, for one model pair. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


@entry_point("steer")
def main(cfg: DictConfig) -> None:
    from emis.stages.steer import run_steer  # after the config check: the stage loads heavy libraries

    run_job(cfg, run_steer)


if __name__ == "__main__":
    main()
