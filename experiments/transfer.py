"""The transfer matrix of EM directions across model families. (Hydra entry point)"""

import hydra
from omegaconf import DictConfig

from emis.stages.job import run_job
from emis.stages.transfer import run_transfer


@hydra.main(version_base="1.3", config_path="../conf", config_name="transfer")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_transfer)


if __name__ == "__main__":
    main()
