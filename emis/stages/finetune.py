"""The fine-tuning stage: a LoRA EM fine-tune of a chat model on chat JSONL (resumable from its checkpoints), or with
`dry_run=true` only what the run would cost (the model built on the meta device, no weights), in plan.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emis.dry_run import plan_finetune
from emis.finetune import FinetuneConfig, finetune
from emis.io import atomic_write_json

log = logging.getLogger(__name__)


def run_finetune(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The adapter's card (without the loss curve), where it is and whether it was reused or resumed; or the plan."""
    ft = FinetuneConfig.from_mapping(OmegaConf.to_container(cfg.finetune, resolve=True))
    if cfg.dry_run:
        report = plan_finetune(ft)
        atomic_write_json(out / "plan.json", report)
        log.info("dry run, nothing trained; the plan (also in %s):\n%s", out / "plan.json", json.dumps(report, indent=2))
        return {"dry_run": True, "plan": report}
    result = finetune(ft)
    log.info("adapter in %s", result.output)
    return {k: v for k, v in result.card.items() if k != "losses"} | {
        "output": str(result.output), "reused": result.reused, "resumed_from": result.resumed_from}
