"""Calibrate an EM monitor on one organism pair and watch it during the insecure fine-tune (Hydra entry point)."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from emis.io import atomic_write_json
from emis.monitor_stage import jsonl_sink, run_monitor

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="monitor")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    # Any `log_fn(metrics, step)` plugs in here, e.g. `lambda d, s: wandb.log(d, step=s)`.
    metrics = run_monitor(cfg, out, log_fn=jsonl_sink(out / "monitor_log.jsonl"))
    atomic_write_json(out / "metrics.json", metrics)
    m, c, r = metrics["monitor"], metrics["control"], metrics["correlation"]
    log.info("layer %d: held-out AUROC %.3f (control %.3f); at threshold FPR %.3f TPR %.3f (control FPR %.3f TPR %.3f)",
             m["layer"], m["auroc"], c["auroc"], m["fpr"], m["tpr"], c["fpr"], c["tpr"])
    log.info("mean score vs spillover over %d points: r = %s; metrics in %s", r["n_points"], r["r"], out)


if __name__ == "__main__":
    main()
