"""LoRA fine-tune of a chat model on EM chat JSONL, resumable (Hydra entry point); dry_run=true prints the cost."""

from omegaconf import DictConfig

from emis.stages.job import entry_point, run_job


@entry_point("finetune")
def main(cfg: DictConfig) -> None:
    from emis.stages.finetune import run_finetune  # after the config check: the stage loads heavy libraries

    run_job(cfg, run_finetune)


if __name__ == "__main__":
    main()
