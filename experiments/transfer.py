"""The transfer matrix of EM directions across model families. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job
from emis.stages.transfer import run_transfer


@entry_point("transfer")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_transfer)


if __name__ == "__main__":
    main()
