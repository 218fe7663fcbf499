"""The study end to end on the configured models (`make run`): report.md, figures, metrics.json. (Hydra entry point)"""

import hydra
from omegaconf import DictConfig

from emis.stages.job import run_job
from emis.stages.replicate import run_replicate


@hydra.main(version_base="1.3", config_path="../conf", config_name="replicate")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_replicate)


if __name__ == "__main__":
    main()
