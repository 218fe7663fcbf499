"""Calibrate an EM monitor on one organism pair and watch it during the insecure fine-tune (Hydra entry point)."""

from pathlib import Path

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


def stage(cfg: DictConfig, out: Path) -> dict:
    from emis.stages.monitor import jsonl_sink, run_monitor  # after the config check: the stage loads heavy libraries

    # Every curve point also goes to `log_fn(metrics, step)`: here a JSONL file; e.g. `lambda d, s: wandb.log(d, step=s)`.
    return run_monitor(cfg, out, log_fn=jsonl_sink(out / "monitor_log.jsonl"))


@entry_point("monitor")
def main(cfg: DictConfig) -> None:
    run_job(cfg, stage)


if __name__ == "__main__":
    main()
