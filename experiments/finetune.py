"""LoRA fine-tune of a chat model on EM chat JSONL, resumable (Hydra entry point); dry_run=true prints the cost."""

import hydra
from omegaconf import DictConfig

from emis.stages.finetune import run_finetune
from emis.stages.job import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="finetune")
def main(cfg: DictConfig) -> None:
    run_job(cfg, run_finetune)


if __name__ == "__main__":
    main()
