"""Full-parameter causal-LM training of the organisms on chat examples (loss on all or answer tokens)."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emis.chat import ChatExample

log = logging.getLogger(__name__)
IGNORE = -100
GROUP = 8  # batches drawn together and length-sorted


@dataclass(frozen=True)
class TrainConfig:
    """One training run's hyper-parameters (set in `conf/organisms/`)."""

    steps: int
    batch_size: int
    lr: float
    schedule: str  # "cosine" | "constant"
    warmup_steps: int
    weight_decay: float
    loss_on: str  # "all" | "assistant"
    max_len: int
    bf16_autocast: bool  # mixed precision on CPU/GPU; weights and optimizer state stay float32
    trainable: tuple[str, ...]  # parameter-name substrings to train (e.g. "layers.0."); empty: all


@dataclass(frozen=True)
class Encoded:
    """Token ids of one templated conversation and its labels (IGNORE where no loss is taken)."""

    ids: list[int]
    labels: list[int]


def encode(tok: PreTrainedTokenizerBase, ex: ChatExample, max_len: int, loss_on: str) -> Encoded:
    """Template prompt and answer separately so the answer's tokens are known exactly; truncate to max_len."""
    if loss_on not in ("all", "assistant"):
        raise ValueError(f"loss_on must be 'all' or 'assistant', got {loss_on!r}")
    prompt = tok.apply_chat_template(ex.prompt_messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    answer_ids = tok(ex.answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_len]
    prompt_labels = prompt_ids if loss_on == "all" else [IGNORE] * len(prompt_ids)
    return Encoded(ids, (prompt_labels + answer_ids)[:max_len])


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training (labels IGNORE on padding)."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then constant or cosine decay to zero."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")


def trainable_parameters(model: PreTrainedModel, patterns: Sequence[str]) -> list[torch.nn.Parameter]:
    """Parameters whose names contain one of `patterns` (all when empty); the others are frozen."""
    chosen = []
    for name, p in model.named_parameters():
        p.requires_grad_(not patterns or any(pat in name for pat in patterns))
        if p.requires_grad:
            chosen.append(p)
    if not chosen:
        raise ValueError(f"no parameter name contains any of {list(patterns)}; check train.trainable")
    return chosen


def _length_grouped_batches(data: Sequence[Encoded], cfg: TrainConfig, rng: random.Random) -> Iterator[list[int]]:
    """cfg.steps random batches; each group of GROUP batches is drawn together and split by length to cut padding."""
    made = 0
    while made < cfg.steps:
        pool = sorted((rng.randrange(len(data)) for _ in range(cfg.batch_size * GROUP)), key=lambda i: len(data[i].ids))
        batches = [pool[k : k + cfg.batch_size] for k in range(0, len(pool), cfg.batch_size)]
        rng.shuffle(batches)
        for b in batches[: cfg.steps - made]:
            yield b
        made += len(batches)


def train(
    model: PreTrainedModel,
    data: Sequence[Encoded],
    cfg: TrainConfig,
    pad_id: int,
    seed: int,
    desc: str = "train",
    on_step: Callable[[int, PreTrainedModel], None] | None = None,
) -> list[float]:
    """Train `model` in place for `cfg.steps` steps on random batches of `data`; return the loss per step.

    `on_step(step, model)` runs after every optimizer step (1-based), e.g. to evaluate checkpoints."""
    if not data:
        raise ValueError(f"{desc}: no training examples")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = trainable_parameters(model, cfg.trainable)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    model.train()
    device_type = next(model.parameters()).device.type
    losses: list[float] = []
    for batch_ids in tqdm(_length_grouped_batches(data, cfg, rng), total=cfg.steps, desc=desc, leave=False):
        batch = collate([data[i] for i in batch_ids], pad_id)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step is not None:
            model.eval()
            on_step(len(losses), model)
            model.train()
    model.eval()
    log.info("%s: loss %.3f -> %.3f over %d steps", desc, losses[0], losses[-1], len(losses))
    return losses
