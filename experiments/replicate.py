"""The study end to end on the configured models (`make run`): report.md, figures, metrics.json. (Hydra entry point)"""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job
from emis.stages.replicate import run_replicate


@entry_point("replicate")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_replicate)


if __name__ == "__main__":
    main()
