"""The study end to end on the configured models (`make run`): report.md, figures, metrics.json. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


@entry_point("replicate")
def main(cfg: DictConfig) -> None:
    from emis.stages.replicate import run_replicate  # after the config check: the stage loads heavy libraries

    run_job(cfg, run_replicate)


if __name__ == "__main__":
    main()
