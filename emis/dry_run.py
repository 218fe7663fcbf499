"""Cost of a run before running it: the model built on the meta device (no weights), its capture shapes, the
number of generations and judge calls, and a rough GPU-memory estimate.

    from emis.dry_run import plan
    plan("Qwen/Qwen2.5-1.5B-Instruct", n_prompts=400, samples=100, alphas=[2, 4, 8], directions=5)

`model` is a hub id or local directory (only `config.json` is read), a transformers config, or a config dict with
`model_type`. Memory figures are estimates (weights exact for the dtype; KV cache exact for a dense cache; the
activation terms are rules of thumb) meant to tell 20 GiB from 200 GiB, not to budget to the last byte.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, AutoModelForCausalLM, PretrainedConfig

from emis.chat import read_chat_jsonl
from emis.finetune import PROJECTIONS, FinetuneConfig
from emis.models import IMAGE_TEXT_MODEL_TYPES, ModelSpec, decoder_layers, resolve_layers

GIB = 1024**3
NF4_BYTES = 4.127 / 8  # NF4 with double-quantised absmax, per weight


def resolve_config(model: str | PretrainedConfig | Mapping[str, Any]) -> PretrainedConfig:
    """A transformers config from a hub id / local dir (config.json only), a config, or a dict with `model_type`."""
    if isinstance(model, PretrainedConfig):
        return model
    if isinstance(model, Mapping):
        values = dict(model)
        if "model_type" not in values:
            raise ValueError("a config dict needs 'model_type' (e.g. 'qwen2', 'gemma2', 'llama', 'mistral3')")
        return AutoConfig.for_model(values.pop("model_type"), **values)
    try:
        return AutoConfig.from_pretrained(str(model))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the config of {model!r} ({err}); give a local directory, a cached hub id, "
                         "or the config itself") from None


def meta_model(config: PretrainedConfig) -> torch.nn.Module:
    """The model of `config` with every tensor on the meta device: shapes only, no memory, no download."""
    with torch.device("meta"):
        if getattr(config, "vision_config", None) is not None:
            from transformers import AutoModelForImageTextToText

            return AutoModelForImageTextToText.from_config(config)
        return AutoModelForCausalLM.from_config(config)


def _loadable(config: PretrainedConfig) -> bool:
    """Whether `load_model` has a class for `config`: transformers' causal LM for it, or emis's image-text path."""
    return config.model_type in IMAGE_TEXT_MODEL_TYPES or type(config) in MODEL_FOR_CAUSAL_LM_MAPPING


def _dtype_bytes(dtype: str) -> int:
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype name (e.g. 'bfloat16')")
    return value.itemsize


def plan(
    model: str | PretrainedConfig | Mapping[str, Any],
    n_prompts: int,
    layers: Literal["all"] | Sequence[int] = "all",
    samples: int = 1,
    alphas: Sequence[float] = (),
    directions: int = 1,
    judge_calls_per_generation: int = 2,
    batch_size: int = 16,
    prompt_tokens: int = 128,
    new_tokens: int = 600,
    dtype: str = "bfloat16",
    quantization: str | None = None,
    lora_rank: int | None = None,
    lora_targets: Sequence[str] = PROJECTIONS,
    train_batch_size: int = 2,
    train_tokens: int = 2048,
    gradient_checkpointing: bool = False,
) -> dict[str, Any]:
    """What a sweep over `model` will cost, without loading a weight.

    - capture: `n_prompts` rows at `layers` of the residual stream -> shape [N, L, d] (float32 on disk);
    - generations: each prompt sampled `samples` times unsteered and once per non-zero alpha per direction
      (`directions` counts the EM direction and every control), i.e. N x samples x (1 + alphas x directions);
    - judge calls: generations x `judge_calls_per_generation` (aligned + coherent = 2);
    - memory for inference at `batch_size` x (`prompt_tokens` + `new_tokens`), and with `lora_rank`, for a LoRA
      fine-tune at `train_batch_size` x `train_tokens`."""
    for name, value in (("n_prompts", n_prompts), ("samples", samples), ("directions", directions),
                        ("judge_calls_per_generation", judge_calls_per_generation)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if quantization not in (None, "4bit"):
        raise ValueError(f"quantization must be None or '4bit', got {quantization!r}")
    config = resolve_config(model)
    text = config.get_text_config()
    net = meta_model(config)
    n_layers = int(text.num_hidden_layers)
    name = model if isinstance(model, str) else getattr(config, "_name_or_path", "") or config.model_type
    layer_path, layer_list = decoder_layers(net, name)
    d = int(net.get_input_embeddings().weight.shape[1])
    if d != text.hidden_size:
        raise ValueError(f"embedding width {d} differs from hidden_size {text.hidden_size}")
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or d // heads)
    intermediate = int(text.intermediate_size)
    vocab = int(text.vocab_size)
    n_params = sum(p.numel() for p in net.parameters())
    wanted = resolve_layers(layers, n_layers)
    bytes_per = _dtype_bytes(dtype)

    # Weights: every parameter at `dtype`; NF4 for the decoder's linear weights under 4-bit quantisation.
    decoder_linear = sum(m.weight.numel() for m in layer_list.modules() if isinstance(m, torch.nn.Linear))
    if quantization == "4bit":
        weights = decoder_linear * NF4_BYTES + (n_params - decoder_linear) * bytes_per
    else:
        weights = n_params * bytes_per
    tokens = prompt_tokens + new_tokens
    kv_cache = 2 * n_layers * kv_heads * head_dim * batch_size * tokens * bytes_per
    # Peak working set of one forward over the batch: hidden states, MLP intermediates, attention scores (eager)
    # and full-sequence logits (a capture trace computes logits at every position).
    activations = batch_size * tokens * (4 * d + 3 * intermediate + vocab) * bytes_per
    activations += batch_size * heads * tokens * tokens * bytes_per
    capture_shape = [n_prompts, len(wanted), d]
    inference_total = weights + kv_cache + activations
    conditions = 1 + sum(1 for a in alphas if a != 0) * directions
    generations = n_prompts * samples * conditions
    report: dict[str, Any] = {
        "model": name,
        "model_type": config.model_type,
        "architecture": type(net).__name__,
        "supported_by_load_model": _loadable(config),
        "layer_path": layer_path,
        "n_layers": n_layers,
        "hidden_size": d,
        "n_heads": heads,
        "n_kv_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": intermediate,
        "vocab_size": vocab,
        "n_parameters": n_params,
        "capture": {"layers": wanted, "shape": capture_shape, "bytes": math.prod(capture_shape) * 4},
        "generations": generations,
        "conditions_per_prompt": conditions,
        "judge_calls": generations * judge_calls_per_generation,
        "memory": {
            "dtype": dtype,
            "quantization": quantization,
            "weights_bytes": int(weights),
            "kv_cache_bytes": int(kv_cache),
            "activations_bytes": int(activations),
            "total_bytes": int(inference_total),
            "total_gib": round(inference_total / GIB, 3),
            "assumptions": {"batch_size": batch_size, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens},
        },
    }
    if lora_rank is not None:
        report["training"] = _training_memory(
            layer_list, lora_rank, lora_targets, weights, n_layers, d, intermediate, vocab,
            train_batch_size, train_tokens, bytes_per, gradient_checkpointing,
        )
    return report


def _training_memory(
    layer_list: torch.nn.Module, rank: int, targets: Sequence[str], weights: float, n_layers: int, d: int,
    intermediate: int, vocab: int, batch: int, tokens: int, bytes_per: int, checkpointing: bool,
) -> dict[str, Any]:
    """LoRA parameters of the targeted decoder projections and a rough training working set."""
    lora_params = sum(
        rank * (m.in_features + m.out_features)
        for name, m in layer_list.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )
    lora_state = lora_params * 4 * 4  # float32 weights, gradients, and AdamW's two moments
    per_layer = batch * tokens * (16 * d + 8 * intermediate) * bytes_per // 2  # stored for backward, bf16 rule of thumb
    stored = (batch * tokens * d * bytes_per * n_layers + per_layer) if checkpointing else per_layer * n_layers
    logits = batch * tokens * vocab * (bytes_per + 4 + 4)  # logits, float32 upcast for the loss, and its gradient
    total = weights + lora_state + stored + logits
    return {
        "lora_rank": rank,
        "lora_parameters": int(lora_params),
        "lora_state_bytes": int(lora_state),
        "activations_bytes": int(stored + logits),
        "total_bytes": int(total),
        "total_gib": round(total / GIB, 3),
        "assumptions": {"batch_size": batch, "tokens": tokens, "gradient_checkpointing": checkpointing},
    }


def plan_pair(specs: Mapping[str, ModelSpec], n_prompts: int, **settings: Any) -> dict[str, Any]:
    """`plan` for each role of a model pair (`specs`: role -> ModelSpec, e.g. from `configured.model_spec`), with
    each adapter's LoRA rank and targets read from its `adapter_config.json`: what the pair costs, offline when the
    configs are local (or cached)."""
    out: dict[str, Any] = {}
    for role, spec in specs.items():
        report = plan(spec.name, n_prompts, dtype=spec.dtype, **settings)
        if spec.adapter:
            from peft import PeftConfig  # imported where used: peft costs seconds at start-up

            try:
                adapter = PeftConfig.from_pretrained(spec.adapter, revision=spec.adapter_revision)
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read the adapter config of {spec.adapter!r} ({err}); give a local directory or "
                                 "a cached hub id") from None
            targets = adapter.target_modules
            report["adapter"] = {"name": spec.adapter, "revision": spec.adapter_revision, "r": adapter.r,
                                 "target_modules": sorted(targets) if not isinstance(targets, str) else targets}
        out[role] = report
    return out


def plan_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """The dry run of a LoRA fine-tune: model shapes, training memory (no weights loaded) and the step count
    (every conversation counted; those whose answer `max_len` truncates away are dropped when training)."""
    report = plan(cfg.model, n_prompts=0, dtype=cfg.dtype, quantization=cfg.quantization, lora_rank=cfg.r,
                  lora_targets=cfg.target_modules if not isinstance(cfg.target_modules, str) else PROJECTIONS,
                  train_batch_size=cfg.per_device_batch_size, train_tokens=cfg.max_len,
                  gradient_checkpointing=cfg.gradient_checkpointing)
    n = len(read_chat_jsonl(Path(cfg.data).expanduser()))
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    report["finetune"] = {"examples": n, "steps": steps if cfg.max_steps is None else min(steps, cfg.max_steps),
                          "effective_batch_size": cfg.batch_size, "output": cfg.output}
    return report
