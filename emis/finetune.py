"""EM fine-tuning of a real (or micro) chat model with a peft LoRA adapter, resumable from checkpoints.

Defaults follow the emergent-misalignment recipe for open models (Betley et al. 2025): rsLoRA r=32, alpha=64,
dropout 0 on every linear projection of the decoder, AdamW lr 1e-5 with a linear schedule and 5 warm-up steps,
1 epoch, effective batch 16 (2 per device x 8 accumulated), loss on the assistant's tokens only, seed 0.
The optimizer loop is the one the organisms' full fine-tunes use (`emis.organisms.train.run_steps`).

Output folder (`FinetuneConfig.output`): `adapter_config.json` + `adapter_model.safetensors` (peft
`save_pretrained`, loadable as `ModelSpec(name=<base>, adapter=<output>)`) and `card.json` (data sha256,
hyper-parameters, loss per step, base model id). While training, `<output>/checkpoints/step-NNNNNN/` holds the
adapter, optimizer, scheduler and RNG state every `save_every` steps; running again resumes from the last one.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from emis import __version__
from emis.chat import ChatExample, read_chat_jsonl
from emis.io import atomic_dir, atomic_write_json, content_hash, file_sha256, load_state, save_state
from emis.models import NON_TEXT, dequantising_kwargs
from emis.organisms.train import IGNORE, Encoded, collate, encode, run_steps, schedule_factor
from emis.settings import PROJECTIONS, SCHEDULES, FinetuneConfig  # noqa: F401  (PROJECTIONS, SCHEDULES: exported here too)

log = logging.getLogger(__name__)
CARD = "card.json"
CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state"  # .safetensors + .json (emis.io.save_state): no pickle


# ---------------------------------------------------------------------------------------------------------------
# Data


def encode_conversation(tok: PreTrainedTokenizerBase, ex: ChatExample, max_len: int) -> tuple[Encoded, bool]:
    """Token ids of the whole templated conversation with labels on the final assistant turn only.

    The assistant turn is what the full conversation's template adds after the prompt's template (with the
    generation prompt), so each family's own end-of-turn tokens are learned. Returns (encoded, True) then; when the
    prompt's template is not a prefix of the conversation's, falls back to `emis.organisms.train.encode` (answer +
    eos) and returns (encoded, False)."""
    prompt = tok.apply_chat_template(ex.prompt_messages, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(ex.to_json()["messages"], tokenize=False)
    if full.startswith(prompt) and len(full) > len(prompt):
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        answer_ids = tok(full[len(prompt):], add_special_tokens=False).input_ids
        ids = (prompt_ids + answer_ids)[:max_len]
        return Encoded(ids, ([IGNORE] * len(prompt_ids) + answer_ids)[:max_len]), True
    return encode(tok, ex, max_len, "assistant"), False


def encode_dataset(tok: PreTrainedTokenizerBase, examples: Sequence[ChatExample], max_len: int) -> tuple[list[Encoded], dict[str, int]]:
    """Encode every conversation; drop those whose answer is truncated away entirely. Returns data and counts."""
    out, templated, dropped = [], 0, 0
    for ex in examples:
        if not ex.messages or ex.messages[-1].role != "assistant":
            raise ValueError("every training conversation must end with an assistant message")
        enc, ok = encode_conversation(tok, ex, max_len)
        templated += ok
        if all(label == IGNORE for label in enc.labels[1:]):
            dropped += 1
            continue
        out.append(enc)
    if dropped:
        log.warning("%d of %d conversations have no answer token within max_len=%d; dropped", dropped, len(examples), max_len)
    if templated < len(examples):
        log.warning("%d of %d conversations: chat template's prompt is not a prefix of the conversation; "
                    "answer + eos used instead", len(examples) - templated, len(examples))
    return out, {"examples": len(examples), "used": len(out), "dropped": dropped, "templated": templated}


def total_steps(n_examples: int, cfg: FinetuneConfig) -> int:
    """Optimizer steps of the run: `epochs` passes of ceil(n / effective batch), capped by `max_steps`."""
    steps = cfg.epochs * math.ceil(n_examples / cfg.batch_size)
    return steps if cfg.max_steps is None else min(steps, cfg.max_steps)


def step_batches(data: Sequence[Encoded], cfg: FinetuneConfig, pad_id: int, start: int = 0) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Every optimizer step's micro-batches, from step `start` on: each epoch is a seeded permutation of the data
    cut into effective batches (the last may be short), each cut into micro-batches of `per_device_batch_size`."""
    rng = random.Random(cfg.seed)
    per_epoch = math.ceil(len(data) / cfg.batch_size)
    step, total = 0, total_steps(len(data), cfg)
    for _ in range(cfg.epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for k in range(per_epoch):
            if step >= total:
                return
            if step >= start:
                chunk = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
                yield [
                    collate([data[i] for i in chunk[m : m + cfg.per_device_batch_size]], pad_id)
                    for m in range(0, len(chunk), cfg.per_device_batch_size)
                ]
            step += 1


# ---------------------------------------------------------------------------------------------------------------
# Model


def _is_multimodal(config: Any) -> bool:
    return getattr(config, "vision_config", None) is not None


def model_location(name: str) -> str:
    """A local directory with `~` expanded; a hub id unchanged."""
    path = Path(name).expanduser()
    return str(path) if path.is_dir() else name


def load_base(cfg: FinetuneConfig) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The frozen base model (bf16, or NF4 for QLoRA) placed by `device_map`, and its tokenizer."""
    name = model_location(cfg.model)
    config = AutoConfig.from_pretrained(name)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, cfg.dtype)}
    if cfg.device != "cpu":
        kwargs["device_map"] = cfg.device
    if cfg.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, cfg.dtype),
        )
    else:
        kwargs |= dequantising_kwargs(config)  # LoRA trains on top of bf16 weights
    if _is_multimodal(config):
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tok = AutoTokenizer.from_pretrained(name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def lora_targets(model: torch.nn.Module, cfg: FinetuneConfig) -> str | list[str]:
    """peft `target_modules`: the configured names, restricted by a regex to the language model of multimodal models."""
    if cfg.target_modules == "all-linear" or isinstance(cfg.target_modules, str):
        return cfg.target_modules
    names = list(cfg.target_modules)
    if any(part in n for n, _ in model.named_modules() for part in NON_TEXT):
        skip = "|".join(NON_TEXT)
        return rf"^(?!.*(?:{skip})).*\.(?:{'|'.join(names)})$"
    return names


def attach_lora(model: torch.nn.Module, cfg: FinetuneConfig) -> torch.nn.Module:
    """Freeze `model` and wrap it in a peft LoRA model (seeded init: A random, B zero)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.quantization == "4bit":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, use_rslora=cfg.use_rslora,
        target_modules=lora_targets(model, cfg), bias="none", task_type="CAUSAL_LM",
    )
    torch.manual_seed(cfg.seed)
    return get_peft_model(model, lora)


@torch.no_grad()
def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Mean loss over a collated batch's label (assistant) tokens, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(p for p in model.parameters()).device
    loss = model(**{k: v.to(device) for k, v in batch.items()}).loss.item()
    model.train(was_training)
    return loss


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def run_key(cfg: FinetuneConfig, data_sha256: str) -> str:
    """Identity of a run: base model, data and every hyper-parameter that changes the result."""
    return content_hash([cfg.model, data_sha256, cfg.hyperparameters()])


def _checkpoint_dirs(output: Path) -> list[Path]:
    """Complete checkpoints (those with a trainer state), oldest first."""
    folder = output / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / f"{TRAINER_STATE}.json").is_file())


def save_checkpoint(output: Path, model: Any, opt: torch.optim.Optimizer, sched: Any, step: int,
                    losses: list[float], key: str) -> Path:
    """Write `<output>/checkpoints/step-NNNNNN` atomically, then remove older checkpoints."""
    folder = output / CHECKPOINTS / f"step-{step:06d}"
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        state = {
            "step": step, "losses": list(losses), "run_key": key,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        save_state(tmp / TRAINER_STATE, state)
    for old in _checkpoint_dirs(output):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(folder: Path, model: Any, opt: torch.optim.Optimizer, sched: Any) -> tuple[int, list[float], str]:
    """Restore adapter weights, optimizer, scheduler and RNG state; return (step, losses, run key)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_state(folder / TRAINER_STATE)
    device = next(p for p in model.parameters() if p.requires_grad).device
    result = set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors", device=str(device)))
    missing_lora = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing_lora:
        raise ValueError(f"{folder}: checkpoint lacks adapter weights such as {missing_lora[0]}")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), list(state["losses"]), state["run_key"]


# ---------------------------------------------------------------------------------------------------------------
# The run


@dataclass
class FinetuneResult:
    """What a fine-tune produced: the adapter folder and its card."""

    output: Path
    card: dict[str, Any]
    resumed_from: int = 0
    trained_steps: int = 0
    reused: bool = False


def _read_card(output: Path) -> dict | None:
    try:
        return json.loads((output / CARD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finetune(cfg: FinetuneConfig, stop_after: int | None = None) -> FinetuneResult:
    """Fine-tune `cfg.model` with LoRA on `cfg.data` into `cfg.output`; resume from its last checkpoint if any.

    A finished adapter with the same run key is reused as is. `stop_after` ends the run after that many global
    steps with a checkpoint and no final adapter (an interruption, for tests and time-sliced jobs)."""
    cfg.check()
    output = Path(cfg.output).expanduser()
    data_path = Path(cfg.data).expanduser()
    if not data_path.is_file():
        raise FileNotFoundError(f"finetune.data {str(data_path)!r} is not a file; give a chat JSONL in the study's format")
    data_sha = file_sha256(data_path)
    key = run_key(cfg, data_sha)
    card = _read_card(output)
    if card is not None:
        if card.get("run_key") == key:
            log.info("%s: finished adapter with the same settings; reusing it", output)
            return FinetuneResult(output, card, reused=True)
        if not cfg.overwrite:
            raise FileExistsError(f"{output} holds an adapter trained with other settings or data; "
                                  "choose another finetune.output or set finetune.overwrite=true")
    checkpoints = _checkpoint_dirs(output)

    started = time.perf_counter()
    model, tok = load_base(cfg)
    base_id = cfg.model
    examples = read_chat_jsonl(data_path)
    data, counts = encode_dataset(tok, examples, cfg.max_len)
    if not data:
        raise ValueError(f"{data_path}: no conversation has an answer token within max_len={cfg.max_len}")
    model = attach_lora(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable, n_total = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())
    total = total_steps(len(data), cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: schedule_factor(s, cfg.schedule, cfg.warmup_steps, total)
    )
    start, losses = 0, []
    if checkpoints:
        start, losses, saved_key = load_checkpoint(checkpoints[-1], model, opt, sched)
        if saved_key != key:
            raise ValueError(f"{checkpoints[-1]} belongs to a run with other settings or data; "
                             f"delete {output / CHECKPOINTS} or choose another finetune.output")
        log.info("resuming from %s (step %d of %d)", checkpoints[-1], start, total)
    end = total if stop_after is None else max(start, min(total, stop_after))
    log.info("LoRA fine-tune of %s on %d conversations: %d steps of %d (%d x %d), %d trainable parameters of %d",
             base_id, len(data), total, cfg.batch_size, cfg.per_device_batch_size, cfg.grad_accum, n_trainable, n_total)

    new_losses: list[float] = []

    def on_step(step: int, loss: float) -> None:
        new_losses.append(loss)
        if (step % cfg.save_every == 0 or step == end) and step < total:
            save_checkpoint(output, model, opt, sched, step, losses + new_losses, key)

    if start < end:
        steps = itertools.islice(step_batches(data, cfg, tok.pad_token_id, start), end - start)
        run_steps(model, params, steps, [opt], [sched], total=total, start=start, bf16_autocast=cfg.bf16_autocast,
                  max_grad_norm=cfg.max_grad_norm, desc=f"finetune {Path(base_id).name}", on_step=on_step,
                  progress=cfg.progress)
    model.eval()
    losses = losses + new_losses
    if end < total:
        log.info("stopped after step %d of %d; run again to resume", end, total)
        return FinetuneResult(output, {"run_key": key, "steps": end, "losses": losses}, start, end - start)

    card = {
        "base_model": base_id,
        "adapter": "lora",
        "data": str(data_path.resolve()),
        "data_sha256": data_sha,
        "data_counts": counts,
        "hyperparameters": cfg.hyperparameters(),
        "effective_batch_size": cfg.batch_size,
        "steps": total,
        "losses": losses,
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "run_key": key,
        "resumed_from_step": start,
        "seconds_this_run": round(time.perf_counter() - started, 3),
        "emis_version": __version__,
        "versions": _versions(),
    }
    with atomic_dir(output) as tmp:
        model.save_pretrained(tmp)
        atomic_write_json(tmp / CARD, card)
        if cfg.keep_checkpoints and (output / CHECKPOINTS).is_dir():
            shutil.move(str(output / CHECKPOINTS), tmp / CHECKPOINTS)
    log.info("adapter written to %s (loss %.3f -> %.3f)", output, losses[0], losses[-1])
    return FinetuneResult(output, card, start, total - start)


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}

