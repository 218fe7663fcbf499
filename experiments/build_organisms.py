"""Build the embedded default: the four families' model organisms (base, secure, insecure) and their metrics."""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job
from emis.stages.organisms import run_build_organisms


@entry_point("build_organisms")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_build_organisms)


if __name__ == "__main__":
    main()
