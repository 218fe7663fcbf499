"""The transfer matrix of EM directions across model families. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


@entry_point("transfer")
def main(cfg: DictConfig) -> None:
    from emis.stages.transfer import run_transfer  # after the config check: the stage loads heavy libraries

    run_job(cfg, run_transfer)


if __name__ == "__main__":
    main()
