"""The transfer stage: every ordered pair of `transfer.models` through `emis.transfer_matrix`; the matrix figure
and the metrics."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emis.configured import evaluation_sampling, generation_cache, steering_target
from emis.io import save_figure
from emis.judges.llm import judge_from_config
from emis.transfer_matrix import TransferSettings, transfer_matrix


def run_transfer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The transfer matrix over every ordered pair of `transfer.models`, with donor/receiver scores."""
    names = list(cfg.transfer.models)
    if len(names) < 2:
        raise ValueError("transfer.models needs at least two models")
    unknown = [n for n in names if n not in cfg.models]
    if unknown:
        raise ValueError(f"transfer.models names {unknown}, not configured under `models` ({list(cfg.models)})")
    judge = judge_from_config(cfg.judge)
    with judge or nullcontext():
        models = {n: steering_target(cfg, cfg.models[n], "transfer.n_prompts")[0] for n in names}
        result = transfer_matrix(models, TransferSettings.from_config(cfg.transfer, cfg.steer, cfg.selection, cfg.controls),
                                 evaluation_sampling(cfg, int(cfg.transfer.max_new_tokens)), generation_cache(cfg), judge,
                                 bool(cfg.transfer.self_check))
    save_figure(result.plot(), out / "transfer_matrix.png")
    return result.to_dict()
