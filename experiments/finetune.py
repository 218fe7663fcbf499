"""LoRA fine-tune of a chat model on EM chat JSONL, resumable (Hydra entry point); dry_run=true prints the cost."""

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from emis.dry_run import plan_finetune
from emis.finetune import FinetuneConfig, finetune
from emis.io import atomic_write_json

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    ft = FinetuneConfig.from_mapping(OmegaConf.to_container(cfg.finetune, resolve=True))
    if cfg.dry_run:
        report = plan_finetune(ft)
        atomic_write_json(out / "plan.json", report)
        print(json.dumps(report, indent=2))
        return
    result = finetune(ft)
    atomic_write_json(out / "metrics.json", {k: v for k, v in result.card.items() if k != "losses"}
                      | {"output": str(result.output), "reused": result.reused, "resumed_from": result.resumed_from})
    log.info("adapter in %s", result.output)


if __name__ == "__main__":
    main()
