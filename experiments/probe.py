"""Capture, difference-in-means directions and separation by layer for one model pair. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


@entry_point("probe")
def main(cfg: DictConfig) -> None:
    from emis.stages.probe import run_probe  # after the config check: the stage loads heavy libraries

    run_job(cfg, run_probe)


if __name__ == "__main__":
    main()
