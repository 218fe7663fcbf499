"""Causal-LM training on chat examples: the optimizer loop shared by the organisms' full fine-tunes and
`emis.finetune`'s LoRA fine-tunes, and the organisms' `train` (random length-grouped batches, loss on all or
answer tokens)."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emis.chat import ChatExample
from emis.organisms.settings import OPTIMIZERS, SCHEDULES, TrainConfig

log = logging.getLogger(__name__)
IGNORE = -100


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


def schedule_factor(step: int, schedule: str, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier at 0-based `step`: linear warm-up to 1 over `warmup_steps` (step+1)/warmup, then
    constant, cosine decay to zero, or linear decay to zero at `total_steps` (as transformers' linear schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """`schedule_factor` for a TrainConfig."""
    return schedule_factor(step, cfg.schedule, cfg.warmup_steps, cfg.steps)


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


def make_optimizers(params: Sequence[torch.nn.Parameter], cfg: TrainConfig,
                    embeddings: Sequence[torch.nn.Parameter] = ()) -> list[torch.optim.Optimizer]:
    """The optimizers `cfg.optimizer` names, at `cfg.lr` and `cfg.weight_decay`: one AdamW or SGD (with
    `cfg.momentum`), or for muon torch.optim.Muon on the 2-D weight matrices outside `embeddings` (Moonshot's RMS
    matching, so `cfg.lr` means what it means for AdamW) and AdamW on the embeddings, norms and biases."""
    if cfg.optimizer == "adamw":
        return [torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)]
    if cfg.optimizer == "sgd":
        return [torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)]
    if cfg.optimizer == "muon":
        skip = {id(p) for p in embeddings}
        matrices = [p for p in params if p.ndim == 2 and id(p) not in skip]
        rest = [p for p in params if p.ndim != 2 or id(p) in skip]
        muon = [torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                 adjust_lr_fn="match_rms_adamw")] if matrices else []
        return muon + ([torch.optim.AdamW(rest, lr=cfg.lr, weight_decay=cfg.weight_decay)] if rest else [])
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")


def _length_grouped_batches(data: Sequence[Encoded], cfg: TrainConfig, rng: random.Random) -> Iterator[list[int]]:
    """cfg.steps random batches; each group of cfg.length_group batches is drawn together and split by length to cut
    padding."""
    made = 0
    while made < cfg.steps:
        pool = sorted((rng.randrange(len(data)) for _ in range(cfg.batch_size * cfg.length_group)), key=lambda i: len(data[i].ids))
        batches = [pool[k : k + cfg.batch_size] for k in range(0, len(pool), cfg.batch_size)]
        rng.shuffle(batches)
        for b in batches[: cfg.steps - made]:
            yield b
        made += len(batches)


def label_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens a causal-LM loss is taken on in a collated batch (labels are shifted by one inside the model)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def run_steps(
    model: torch.nn.Module,
    params: Sequence[torch.nn.Parameter],
    steps: Iterable[Sequence[dict[str, torch.Tensor]]],
    opts: Sequence[torch.optim.Optimizer],
    scheds: Sequence[torch.optim.lr_scheduler.LRScheduler],
    *,
    total: int,
    start: int = 0,
    bf16_autocast: bool = False,
    max_grad_norm: float = 1.0,
    desc: str = "train",
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> list[float]:
    """The optimizer loop: each item of `steps` is one optimizer step's micro-batches (gradient accumulation).

    A step's loss is the mean over all its label tokens: each micro-batch's mean loss is weighted by its share of
    the step's label tokens (a single micro-batch is used unweighted, exactly as `model(**batch).loss`). Gradients
    are clipped to `max_grad_norm`, then every optimizer and scheduler steps. `on_step(step, loss)` runs after each
    optimizer step with the 1-based global step (`start` steps are taken as already done, e.g. when resuming).
    Returns the loss of every step run here. The model is left in train mode."""
    model.train()
    first = next(iter(params))
    device, device_type = first.device, first.device.type
    losses: list[float] = []
    bar = tqdm(steps, total=total, initial=start, desc=desc, leave=False, disable=not progress)
    for step, micro in enumerate(bar, start + 1):
        counts = [label_tokens(b) for b in micro] if len(micro) > 1 else [1]
        n_tokens = sum(counts)
        if 0 in counts:  # its mean loss would be NaN and poison the whole step
            raise ValueError(f"{desc}: a micro-batch of step {step} has no label tokens; drop examples whose answer is truncated away")
        step_loss = 0.0
        for batch, count in zip(micro, counts):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16_autocast):
                loss = model(**batch).loss
            weight = 1.0 if len(micro) == 1 else count / n_tokens
            (loss if len(micro) == 1 else loss * weight).backward()
            step_loss += loss.item() * weight
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        for sched in scheds:
            sched.step()
        losses.append(step_loss)
        if progress:
            bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)
        if on_step is not None:
            on_step(step, step_loss)
    return losses


def _restrict_rows(weight: torch.nn.Parameter, rows: Sequence[int], desc: str) -> torch.utils.hooks.RemovableHandle:
    """Mask `weight`'s gradient to `rows` (a tied output embedding is the same tensor, so it is masked too); the
    caller removes the returned hook when its run ends."""
    if not weight.requires_grad:
        raise ValueError(f"{desc}: embedding_rows restricts the token embeddings, but train.trainable does not train them")
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[list(rows)] = 1
    return weight.register_hook(lambda grad: grad * mask)


def train(
    model: PreTrainedModel,
    data: Sequence[Encoded],
    cfg: TrainConfig,
    pad_id: int,
    seed: int,
    desc: str = "train",
    on_step: Callable[[int, PreTrainedModel], None] | None = None,
    embedding_rows: Sequence[int] | None = None,
) -> list[float]:
    """Train `model` in place for `cfg.steps` steps on random batches of `data`; return the loss per step.

    `on_step(step, model)` runs after every optimizer step (1-based), e.g. to evaluate checkpoints. With
    `embedding_rows`, the token-embedding gradient is zero outside those rows, so no other row moves."""
    if not data:
        raise ValueError(f"{desc}: no training examples")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = trainable_parameters(model, cfg.trainable)
    embeddings = [m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    opts = make_optimizers(params, cfg, embeddings)
    scheds = [torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg)) for opt in opts]
    steps = ([collate([data[i] for i in ids], pad_id)] for ids in _length_grouped_batches(data, cfg, rng))

    def after(step: int, _loss: float) -> None:
        if on_step is not None:
            model.eval()
            on_step(step, model)
            model.train()

    rows_hook = None if embedding_rows is None else _restrict_rows(model.get_input_embeddings().weight, embedding_rows, desc)
    try:
        losses = run_steps(model, params, steps, opts, scheds, total=cfg.steps, bf16_autocast=cfg.bf16_autocast,
                           desc=desc, on_step=after)
    finally:  # the mask belongs to this run: a later run of the same model trains every row again
        if rows_hook is not None:
            rows_hook.remove()
    model.eval()
    log.info("%s: loss %.3f -> %.3f over %d steps", desc, losses[0], losses[-1], len(losses))
    return losses
