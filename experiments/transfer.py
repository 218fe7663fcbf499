"""The transfer matrix of EM directions across model families (Hydra entry point)."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from emis.io import atomic_write_json
from emis.transfer import run_transfer

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="transfer")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    metrics = run_transfer(cfg, out)
    atomic_write_json(out / "metrics.json", metrics)
    log.info("donor ranking %s, receiver ranking %s; %d of %d pairs specific; metrics in %s",
             metrics["donor_ranking"], metrics["receiver_ranking"],
             sum(p["verdict"] == "specific" for p in metrics["pairs"]), len(metrics["pairs"]), out)


if __name__ == "__main__":
    main()
