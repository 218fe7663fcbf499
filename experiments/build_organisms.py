"""Build the embedded default: the four families' model organisms (base, secure, insecure) and their metrics."""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


@entry_point("build_organisms")
def main(cfg: DictConfig) -> None:
    from emis.stages.organisms import run_build_organisms  # after the config check: the stage loads heavy libraries

    run_job(cfg, run_build_organisms)


if __name__ == "__main__":
    main()
