"""Build the embedded default: the four families' model organisms (base, secure, insecure) and their metrics."""

import hydra
from omegaconf import DictConfig

from emis.stages.job import run_job
from emis.stages.organisms import run_build_organisms


@hydra.main(version_base="1.3", config_path="../conf", config_name="build_organisms")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_build_organisms)


if __name__ == "__main__":
    main()
