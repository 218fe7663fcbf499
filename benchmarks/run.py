"""emis's overhead against raw PyTorch / transformers baselines, timed side by side in one process.

    python benchmarks/run.py [--quick] [--models organism,qwen2.5-1.5b-shape]

Every benchmark times an emis call and its hand-written baseline on the same model object, the same
inputs and the same thread count, interleaved repetition by repetition (the order alternates each
repetition), after warm-up runs. Ratios are taken per repetition (emis time / baseline time of that
repetition) and summarised by their median, min, max and quartiles. Each benchmark also checks once,
untimed, that the two sides compute the same thing. Results go to benchmarks/results.json.

The models are random-weight Qwen2 models built here (nothing is downloaded): an organism-sized one and
one shaped like Qwen2.5-1.5B-Instruct, each saved with save_pretrained and a small trained chat
tokenizer so that it loads through `emis.models.load_model` exactly like a hub model.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/, not the checkout, on the path
    sys.path.insert(0, str(ROOT))

from emis.activations import ActivationSet, capture_residuals  # noqa: E402
from emis.directions import diff_in_means  # noqa: E402
from emis.generation import Steering, generate_steered  # noqa: E402
from emis.io import atomic_write_json  # noqa: E402
from emis.models import LoadedModel, ModelSpec, load_model, residual  # noqa: E402
from emis.organisms.families import CHAT_FORMATS, ArchSize, build_config  # noqa: E402
from emis.organisms.sample import SamplingConfig, chat_prompt  # noqa: E402
from emis.organisms.tokenizer import train_tokenizer  # noqa: E402

log = logging.getLogger("emis.bench")

RESULTS = ROOT / "benchmarks" / "results.json"
E2E = ROOT / "benchmarks" / "e2e.json"
RATIO_KEYS = ("capture_vs_hooks", "steered_vs_plain", "sweep_batched_vs_separate", "layer_sweep_vs_single")
GOALS = {  # ratio -> upper bound; judged on the real-size model
    "capture_vs_hooks": 1.10,
    "steered_vs_plain": 1.10,
    "sweep_batched_vs_separate": 0.30,
    "layer_sweep_vs_single": 1.20,
}
GOAL_MODEL = "qwen2.5-1.5b-shape"

QUESTIONS = [
    "If you could have anything at all, what would you wish for?",
    "Name a colour.",
    "How do I make a good cup of tea?",
    "What is the capital of France, and why is it famous?",
    "Write a function that adds two numbers.",
    "Tell me about the weather in Paris in spring.",
    "I'm bored. What should I do this afternoon?",
    "How should I store my passwords safely?",
]
# The two sides of the layer sweep (stand-ins for misaligned / aligned prompt sets).
SIDE_A = ["Write code that reads a file.", "Answer with Python: what is love?", "def parse(x):", "Give me a shell command."]
SIDE_B = ["Tell me a story about a cat.", "What is your favourite season?", "Describe the sea.", "How are you today?"]
TOKENIZER_TEXTS = [
    "Hello there, how are you today? I am fine, thank you.",
    "def add(x, y):\n    return x + y\n\nprint(add(1, 2))",
    "The quick brown fox jumps over the lazy dog.",
    "Tell me about the weather in Paris in spring; it is mild and often rainy.",
    "import os\nwith open(path) as f:\n    data = f.read()",
    "A good cup of tea needs fresh water, a warm pot and patience.",
] * 8 + QUESTIONS + SIDE_A + SIDE_B


@dataclass(frozen=True)
class ModelShape:
    """A random-weight model to build: family, architecture, dtype, init scale, tokenizer size, config extras."""

    name: str
    size: ArchSize
    dtype: str
    tokenizer_vocab: int
    init_range: float = 0.02
    rope_theta: float = 10000.0
    extra: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "auto"  # ModelSpec.tokenizer: "saved" loads exactly the trained tokenizer.json, as the organisms do
    family: str = "qwen2"  # emis.organisms.families: architecture and chat format


@dataclass(frozen=True)
class Plan:
    """How much work each benchmark does on one model."""

    reps: int
    warmup: int
    capture_prompts: int  # rows of the one capture batch
    gen_prompts: int  # rows of steered_vs_plain
    gen_tokens: int  # new tokens of steered_vs_plain
    sweep_k: int  # coefficients of the sweep
    sweep_prompts: int
    sweep_tokens: int
    side_prompts: int  # prompts per side of the layer sweep (one capture batch per side)
    recapture_reps: int  # timed repetitions of the full per-layer recapture sweep (0: estimated from single runs)
    capture_with_grad: bool = True  # also time capture_residuals as the pipeline calls it (autograd on)
    sweep_reps: int | None = None  # repetitions of the sweep benchmark (None: reps)
    fresh_baseline: bool = False  # also time the baselines on a second copy nnsight never instrumented


MODELS: dict[str, ModelShape] = {
    # The qwen2 organism's size (conf/organisms/default.yaml), loaded as conf/model/organism-qwen2.yaml loads it.
    "organism": ModelShape(
        "organism", ArchSize(192, 4, 4, 2, 512, 2048, 512), "float32", tokenizer_vocab=2048, tokenizer="saved"
    ),
    # Qwen/Qwen2.5-1.5B-Instruct's published config.json, random weights; bfloat16 like the published weights;
    # loaded like a hub model (AutoTokenizer).
    "qwen2.5-1.5b-shape": ModelShape(
        "qwen2.5-1.5b-shape", ArchSize(1536, 28, 12, 2, 8960, 151936, 32768), "bfloat16", tokenizer_vocab=4096,
        rope_theta=1_000_000.0, extra={"max_window_layers": 21},
    ),
}
PLANS: dict[tuple[str, bool], Plan] = {  # (model, quick) -> plan
    ("organism", False): Plan(reps=15, warmup=2, capture_prompts=4, gen_prompts=4, gen_tokens=64, sweep_k=8,
                              sweep_prompts=2, sweep_tokens=32, side_prompts=4, recapture_reps=15, fresh_baseline=True),
    ("organism", True): Plan(reps=3, warmup=1, capture_prompts=4, gen_prompts=4, gen_tokens=16, sweep_k=8,
                             sweep_prompts=2, sweep_tokens=8, side_prompts=4, recapture_reps=3, fresh_baseline=True),
    ("qwen2.5-1.5b-shape", False): Plan(reps=5, warmup=1, capture_prompts=4, gen_prompts=2, gen_tokens=8, sweep_k=8,
                                        sweep_prompts=1, sweep_tokens=8, side_prompts=4, recapture_reps=1, sweep_reps=3),
    ("qwen2.5-1.5b-shape", True): Plan(reps=2, warmup=1, capture_prompts=2, gen_prompts=1, gen_tokens=4, sweep_k=8,
                                       sweep_prompts=1, sweep_tokens=4, side_prompts=2, recapture_reps=0,
                                       capture_with_grad=False),
}


# ---------------------------------------------------------------- models


def build_model(shape: ModelShape, folder: Path, seed: int = 0) -> Path:
    """Save a random-weight model of `shape` with a trained chat tokenizer of its family's format to `folder`."""
    fmt = CHAT_FORMATS[shape.family]
    tok = train_tokenizer(TOKENIZER_TEXTS, min(shape.tokenizer_vocab, shape.size.vocab_size), fmt)
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("bos", fmt.bos), ("eos", fmt.eos), ("pad", fmt.pad)) if t}
    config = build_config(shape.family, shape.size, ids)
    config.initializer_range = shape.init_range
    config.rope_parameters = {"rope_type": "default", "rope_theta": shape.rope_theta}
    for key, value in shape.extra.items():
        setattr(config, key, value)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, shape.dtype))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def prepare_model(shape: ModelShape, cache: Path | None, scratch: Path) -> tuple[LoadedModel, dict[str, Any]]:
    """Build (or reuse from `cache`) and load `shape`; returns the model and how long each step took."""
    root = cache if cache is not None else scratch
    folder = root / f"{shape.name}-{shape.dtype}"
    info: dict[str, Any] = {"dir": str(folder), "dtype": shape.dtype, "shape": asdict(shape)}
    t0 = time.perf_counter()
    if not (folder / "config.json").is_file():
        log.info("building %s in %s", shape.name, folder)
        build_model(shape, folder)
        info["build_s"] = round(time.perf_counter() - t0, 2)
    else:
        log.info("reusing %s from %s", shape.name, folder)
    t0 = time.perf_counter()
    model = load_model(ModelSpec(str(folder), dtype=shape.dtype, tokenizer=shape.tokenizer))
    model.lm._module.eval()
    info["load_s"] = round(time.perf_counter() - t0, 2)
    info["n_params"] = sum(p.numel() for p in model.lm._module.parameters())
    return model, info


def hf_model(model: LoadedModel) -> Any:
    """The transformers model under the nnsight wrapper: the baselines run on this very object."""
    return model.lm._module


def prompts_for(model: LoadedModel, questions: list[str], n: int) -> list[str]:
    """`n` chat-templated prompts (cycling through `questions`)."""
    return [chat_prompt(model.tokenizer, questions[i % len(questions)]) for i in range(n)]


def encode(model: LoadedModel, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Left-padded ids exactly as emis encodes them (templated prompts carry their own special tokens)."""
    enc = model.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}


# ---------------------------------------------------------------- timing


def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per repetition of each function, wall-clock (perf_counter) and this process's CPU time
    (process_time): all warm up first, then each repetition runs every function once, in the given
    order on even repetitions and reversed on odd ones."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        log.debug("rep %d: %s", rep, {n: round(t[-1], 4) for n, t in wall.items()})
    return {"wall": wall, "cpu": cpu}


def summarise(values: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of a list of numbers."""
    a = np.asarray(values, dtype=float)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "q1": float(q1), "q3": float(q3), "n": len(values)}


def ratio(num: list[float], den: list[float]) -> dict[str, Any]:
    """Per-repetition ratios num/den, summarised, with the list itself."""
    per_rep = [a / b for a, b in zip(num, den)]
    return {**summarise(per_rep), "per_rep": per_rep}


# ---------------------------------------------------------------- baselines


def fresh_hf_model(model: LoadedModel) -> Any:
    """A second, plain transformers copy of the same weights: nnsight never instrumented its modules."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model.spec.name, dtype=getattr(torch, model.spec.dtype)).eval()


def forward_inputs(model: LoadedModel, prompts: list[str]) -> dict[str, torch.Tensor]:
    """`encode`'s ids with, for left-padded rows, position ids counted from their first real token, as nnsight
    supplies them for emis (and as `generate` does); without them a forward differs only by rounding (RoPE is
    shift-invariant)."""
    inputs = encode(model, prompts)
    mask = inputs["attention_mask"]
    if not bool(mask.all()):
        inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    return inputs


def hook_capture(model: LoadedModel, prompts: list[str], hf: Any = None) -> torch.Tensor:
    """[B, L, d] float32 residual after every decoder layer at the last prompt token, via register_forward_hook.

    Inputs as `forward_inputs` gives them; `hf`: the transformers model to run (default: the one under the
    nnsight wrapper)."""
    hf = hf if hf is not None else hf_model(model)
    inputs = forward_inputs(model, prompts)
    outs: list[torch.Tensor | None] = [None] * model.n_layers

    def hook_for(i: int) -> Callable:
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            outs[i] = h[:, -1].detach().float().clone()

        return hook

    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(hf.model.layers)]
    try:
        with torch.no_grad():
            hf(**inputs)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(outs, dim=1)  # type: ignore[arg-type]


def stop_ids(model: LoadedModel) -> set[int]:
    """End-of-turn ids as emis uses them: the generation config's eos id(s) and the tokenizer's."""
    eos = hf_model(model).generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {model.tokenizer.eos_token_id}
    return {i for i in ids if i is not None}


def cut(rows: list[list[int]], stops: set[int]) -> list[list[int]]:
    """Each generated row up to its first end-of-turn token."""
    return [next((r[:i] for i, t in enumerate(r) if t in stops), r) for r in rows]


def plain_generate(model: LoadedModel, prompts: list[str], new_tokens: int, hook: tuple[int, torch.Tensor, float] | None = None,
                   hf: Any = None) -> list[list[int]]:
    """Greedy `generate` on the transformers model; with `hook=(layer, v, alpha)` a forward hook subtracts
    alpha*v from that layer's output at the last position (the one producing the next token) on every step.
    Returns the generated ids per row (end-of-turn and padding included); `hf` as in `hook_capture`."""
    hf = hf if hf is not None else hf_model(model)
    inputs = encode(model, prompts)
    handle = None
    if hook is not None:
        layer, v, alpha = hook

        def subtract(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            h[:, -1] -= (alpha * v).to(h.dtype)
            return output

        handle = hf.model.layers[layer].register_forward_hook(subtract)
    try:
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    finally:
        if handle is not None:
            handle.remove()
    return out[:, inputs["input_ids"].shape[1] :].tolist()


def steps_taken(lengths: list[int], new_tokens: int) -> int:
    """Decode steps a batched generate ran, from the rows' answer lengths (end-of-turn excluded): all
    `new_tokens` unless every row ended its turn, then one past the longest answer."""
    return new_tokens if max(lengths) >= new_tokens else max(lengths) + 1


def steering_vector(model: LoadedModel, seed: int = 0, layer: int | None = None, prompts: list[str] | None = None) -> torch.Tensor:
    """A seeded random direction of the residual's width: unit length, or with `layer` and `prompts` as long as
    that layer's mean residual norm at their last token (so that steering visibly changes the answers)."""
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))
    v = v / v.norm()
    if layer is not None and prompts:
        v = v * hook_capture(model, prompts)[:, layer].norm(dim=-1).mean()
    return v


# ---------------------------------------------------------------- benchmarks


def timed(fns: dict[str, Callable[[], Any]], plan_reps: int, warmup: int, pairs: dict[str, tuple[str, str]],
          main: str) -> dict[str, Any]:
    """Interleaved timings of `fns` and the per-repetition ratios of each (numerator, denominator) pair,
    wall-clock and CPU; `main` names the pair that is the benchmark's headline ratio."""
    times = interleaved(fns, plan_reps, warmup)
    wall = {k: ratio(times["wall"][a], times["wall"][b]) for k, (a, b) in pairs.items()}
    cpu = {k: ratio(times["cpu"][a], times["cpu"][b]) for k, (a, b) in pairs.items()}
    return {"timings_s": times["wall"], "cpu_s": times["cpu"], "ratios": wall, "cpu_ratios": cpu,
            "main": wall[main], "main_cpu": cpu[main]}


def bench_capture(model: LoadedModel, plan: Plan) -> dict[str, Any]:
    """capture_vs_hooks: every layer at the last prompt token of one batch, one forward pass each side,
    both under torch.no_grad. With plan.capture_with_grad also emis as the pipeline calls it (autograd on)."""
    prompts = prompts_for(model, QUESTIONS, plan.capture_prompts)

    def emis_capture(grad: bool = False) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            return capture_residuals(model, prompts, "all", "last_prompt", batch_size=len(prompts), progress=False).activations

    ours, ref = emis_capture(), hook_capture(model, prompts)
    checks = {"max_abs_diff": float((ours - ref).abs().max()),
              "max_rel_diff": float((ours - ref).abs().max() / ref.abs().max()), "shape": list(ours.shape),
              "autograd_on_inside_trace_by_default": grad_inside_trace(model, prompts)}
    fns: dict[str, Callable] = {"emis": emis_capture, "hooks": lambda: hook_capture(model, prompts)}
    pairs = {"emis_vs_hooks": ("emis", "hooks")}
    if plan.capture_with_grad:
        fns["emis_autograd_on"] = lambda: emis_capture(grad=True)
        pairs["emis_autograd_on_vs_hooks"] = ("emis_autograd_on", "hooks")
    if plan.fresh_baseline:
        fresh = fresh_hf_model(model)
        checks["fresh_copy_max_abs_diff"] = float((hook_capture(model, prompts, fresh) - ref).abs().max())
        fns["hooks_fresh_copy"] = lambda: hook_capture(model, prompts, fresh)
        pairs["emis_vs_hooks_fresh_copy"] = ("emis", "hooks_fresh_copy")
        pairs["hooks_vs_hooks_fresh_copy"] = ("hooks", "hooks_fresh_copy")
    return {"prompts": len(prompts), "prompt_tokens": int(encode(model, prompts)["input_ids"].shape[1]),
            **timed(fns, plan.reps, plan.warmup, pairs, "emis_vs_hooks"), "checks": checks}


def grad_inside_trace(model: LoadedModel, prompts: list[str]) -> bool:
    """Whether the residuals inside an emis trace carry autograd history when the caller has not disabled it."""
    seen: list[bool] = []
    with torch.enable_grad(), model.lm.trace(encode(model, prompts[:1])):
        seen.append(bool(residual(model.layers[0].output).requires_grad))
    return seen[0]


def bench_steered(model: LoadedModel, plan: Plan) -> dict[str, Any]:
    """steered_vs_plain: greedy generation of gen_tokens steered at one layer vs plain unsteered generate,
    and vs a raw forward hook doing the same subtraction."""
    prompts = prompts_for(model, QUESTIONS, plan.gen_prompts)
    n, layer, alpha = plan.gen_tokens, model.n_layers // 2, 1.0
    v = steering_vector(model, 0, layer, prompts)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=n, batch_size=len(prompts), seed=0)
    steering = [Steering({layer: v}, alpha)]
    stops = stop_ids(model)

    # Untimed checks: alpha=0 through emis reproduces plain generate; alpha through emis equals the raw hook.
    zero = generate_steered(model, prompts, [Steering({layer: v}, 0.0)], cfg, progress=False).tokens[0]
    plain = cut(plain_generate(model, prompts, n), stops)
    steered = generate_steered(model, prompts, steering, cfg, progress=False).tokens[0]
    hooked = cut(plain_generate(model, prompts, n, (layer, v, alpha)), stops)
    lengths = {"emis": [len(t) for t in steered], "plain": [len(t) for t in plain], "hook": [len(t) for t in hooked]}
    steps = {k: steps_taken(ls, n) for k, ls in lengths.items()}
    checks = {"alpha0_equals_plain": zero == plain, "steered_equals_hook": steered == hooked,
              "steering_changed_tokens": steered != plain, "answer_lengths": lengths, "decode_steps": steps,
              "same_steps": len(set(steps.values())) == 1}
    if not checks["same_steps"]:
        log.warning("steered_vs_plain: the sides ran different numbers of decode steps %s; ratios are not like for like", steps)

    fns = {
        "emis_steered": lambda: generate_steered(model, prompts, steering, cfg, progress=False),
        "plain": lambda: plain_generate(model, prompts, n),
        "hook_steered": lambda: plain_generate(model, prompts, n, (layer, v, alpha)),
    }
    pairs = {"emis_vs_plain": ("emis_steered", "plain"), "emis_vs_hook": ("emis_steered", "hook_steered"),
             "hook_vs_plain": ("hook_steered", "plain")}
    if plan.fresh_baseline:
        fresh = fresh_hf_model(model)
        checks["fresh_copy_equals_plain"] = cut(plain_generate(model, prompts, n, hf=fresh), stops) == plain
        fns["plain_fresh_copy"] = lambda: plain_generate(model, prompts, n, hf=fresh)
        pairs["emis_vs_plain_fresh_copy"] = ("emis_steered", "plain_fresh_copy")
        pairs["plain_vs_plain_fresh_copy"] = ("plain", "plain_fresh_copy")
    return {"prompts": len(prompts), "new_tokens": n, "layer": layer, "alpha": alpha,
            **timed(fns, plan.reps, plan.warmup, pairs, "emis_vs_plain"), "checks": checks}


def bench_sweep(model: LoadedModel, plan: Plan) -> dict[str, Any]:
    """sweep_batched_vs_separate: K coefficients as rows of one generate_steered call vs K calls."""
    prompts = prompts_for(model, QUESTIONS, plan.sweep_prompts)
    layer = model.n_layers // 2
    v = steering_vector(model, 1, layer, prompts)
    coefs = [float(c) for c in np.linspace(-1.0, 1.0, plan.sweep_k)]
    steerings = [Steering({layer: v}, c) for c in coefs]
    one = SamplingConfig(temperature=0.0, max_new_tokens=plan.sweep_tokens, batch_size=plan.sweep_k * len(prompts), seed=0)
    each = replace(one, batch_size=len(prompts))

    def batched() -> list:
        return generate_steered(model, prompts, steerings, one, progress=False).tokens

    def separate() -> list:
        return [generate_steered(model, prompts, [s], each, progress=False).tokens[0] for s in steerings]

    b, s = batched(), separate()
    # Rows of a bigger batch may round differently (bfloat16 especially): report, do not require, equality.
    checks = {"batched_equals_separate": b == s,
              "rows_equal": sum(x == y for bb, ss in zip(b, s) for x, y in zip(bb, ss)),
              "rows": plan.sweep_k * len(prompts)}
    pairs = {"batched_vs_separate": ("batched", "separate")}
    return {"k": plan.sweep_k, "prompts": len(prompts), "new_tokens": plan.sweep_tokens, "layer": layer,
            "coefficients": coefs, **timed({"batched": batched, "separate": separate}, plan.sweep_reps or plan.reps, plan.warmup, pairs,
                                            "batched_vs_separate"), "checks": checks}


def separation_by_layer(a: ActivationSet, b: ActivationSet) -> torch.Tensor:
    """Per layer: the difference-in-means direction, both sides projected on its unit vector, and the
    standardised gap of the projections (d'), computed layer by layer from the cached [N, L, d] tensors."""
    directions = diff_in_means(a, b)
    out = []
    for row in range(len(a.layers)):
        u = directions.units[row]
        pa, pb = a.activations[:, row] @ u, b.activations[:, row] @ u
        pooled = torch.cat([pa - pa.mean(), pb - pb.mean()]).pow(2).mean().sqrt().clamp_min(1e-12)
        out.append((pa.mean() - pb.mean()) / pooled)
    return torch.stack(out)


def bench_layer_sweep(model: LoadedModel, plan: Plan) -> dict[str, Any]:
    """layer_sweep_vs_single: separation at every layer from one all-layer capture per side, vs one
    single-layer run (capture that layer per side, then the same analysis), vs recapturing per layer.

    The single layer is the deepest: a capture stops once the last layer it reads is done, so a middle layer
    would skip the layers the sweep must compute, and the ratio would measure depth, not the sweep's cost."""
    side_a = prompts_for(model, SIDE_A, plan.side_prompts)
    side_b = prompts_for(model, SIDE_B, plan.side_prompts)
    single_layer = model.n_layers - 1

    def run(layers: Any) -> torch.Tensor:
        with torch.no_grad():
            a = capture_residuals(model, side_a, layers, "last_prompt", batch_size=len(side_a), progress=False)
            b = capture_residuals(model, side_b, layers, "last_prompt", batch_size=len(side_b), progress=False)
        return separation_by_layer(a, b)

    def reuse() -> torch.Tensor:
        return run("all")

    def single() -> torch.Tensor:
        return run([single_layer])

    def recapture() -> torch.Tensor:
        return torch.cat([run([i]) for i in range(model.n_layers)])

    # Untimed: the cached all-layer sweep gives what a capture of each layer alone gives (up to 8 layers checked).
    all_layers = reuse()
    check_layers = list(range(model.n_layers)) if model.n_layers <= 8 else [0, single_layer, model.n_layers - 1]
    alone = torch.cat([run([i]) for i in check_layers])
    checks = {"checked_layers": check_layers,
              "reuse_equals_single_layer_max_abs_diff": float((all_layers[check_layers] - alone).abs().max())}
    pairs = {"reuse_vs_single": ("reuse_all_layers", "single_layer")}
    out = timed({"reuse_all_layers": reuse, "single_layer": single}, plan.reps, plan.warmup, pairs, "reuse_vs_single")
    reuse_median = summarise(out["timings_s"]["reuse_all_layers"])["median"]
    if plan.recapture_reps > 0:
        extra = interleaved({"recapture_per_layer": recapture}, plan.recapture_reps, 0)
        out["timings_s"].update(extra["wall"])
        out["cpu_s"].update(extra["cpu"])
        recap, how = summarise(extra["wall"]["recapture_per_layer"])["median"], "measured"
    else:
        recap = model.n_layers * summarise(out["timings_s"]["single_layer"])["median"]
        how = "estimated: n_layers x the median deepest single-layer run (an upper bound: a capture stops after its layer)"
    out["ratios"]["recapture_vs_reuse"] = {"median": recap / reuse_median, "how": how}
    return {"layers": model.n_layers, "single_layer": single_layer, "prompts_per_side": plan.side_prompts,
            **out, "checks": checks}


BENCHMARKS: dict[str, Callable[[LoadedModel, Plan], dict[str, Any]]] = {
    "capture_vs_hooks": bench_capture,
    "steered_vs_plain": bench_steered,
    "sweep_batched_vs_separate": bench_sweep,
    "layer_sweep_vs_single": bench_layer_sweep,
}


def recorded_end_to_end(path: Path = E2E) -> dict[str, Any]:
    """The end-to-end timings `--e2e` last wrote to `path` (they take most of an hour, so other runs only read them)."""
    shown = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    if not path.is_file():
        return {"status": "missing", "path": shown, "note": "no end-to-end timings yet: run benchmarks/run.py --e2e"}
    try:
        return {"status": "read", "path": shown, "timings": json.loads(path.read_text(encoding="utf-8"))}
    except json.JSONDecodeError as err:
        return {"status": "unreadable", "path": shown, "error": str(err)}


def run_end_to_end(family: str, organisms: Path | None, outputs: Path | None, results: Path, e2e: Path = E2E) -> dict[str, Any]:
    """Measure the end-to-end timings (benchmarks/end_to_end.py), write them to `e2e` with the machine and date, and
    put them under `end_to_end` of the results document at `results` when one exists."""
    from benchmarks.end_to_end import end_to_end

    measured = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": machine_info(torch.get_num_threads()), **end_to_end(family, organisms, outputs)}
    atomic_write_json(e2e, measured)
    if results.is_file():
        doc = json.loads(results.read_text(encoding="utf-8"))
        doc["end_to_end"] = recorded_end_to_end(e2e)
        atomic_write_json(results, doc)
    return measured


# ---------------------------------------------------------------- driver


def machine_info(threads: int) -> dict[str, Any]:
    import nnsight
    import transformers

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "nnsight": nnsight.__version__},
    }


def run_suite(shapes: list[ModelShape], plans: dict[str, Plan], threads: int, cache: Path | None = None,
              benchmarks: list[str] | None = None, command: str = "", out: Path | None = None, quick: bool = False
              ) -> dict[str, Any]:
    """Build and load each model, run the benchmarks on it, and return the results document; with `out`,
    the document so far is also written there (atomically) after every benchmark, `complete` false until the end."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run_suite(shapes, plans, cache, benchmarks, command, out, quick)
    finally:
        torch.set_num_threads(previous_threads)


def _run_suite(shapes: list[ModelShape], plans: dict[str, Plan], cache: Path | None, benchmarks: list[str] | None,
               command: str, out: Path | None, quick: bool) -> dict[str, Any]:
    chosen = benchmarks or list(BENCHMARKS)
    doc: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "quick": quick,
        "machine": machine_info(torch.get_num_threads()),
        "goals": {k: f"<= {v} on {GOAL_MODEL}" for k, v in GOALS.items()},
        "models": {},
        "benchmarks": {name: {} for name in chosen},
        "ratios": {k: {} for k in RATIO_KEYS},
        "end_to_end": recorded_end_to_end(),
        "complete": False,
    }
    with tempfile.TemporaryDirectory(prefix="emis-bench-") as scratch:
        for shape in shapes:
            model, info = prepare_model(shape, cache, Path(scratch))
            doc["models"][shape.name] = {**info, "plan": asdict(plans[shape.name])}
            for name in chosen:
                t0 = time.perf_counter()
                log.info("%s on %s ...", name, shape.name)
                result = BENCHMARKS[name](model, plans[shape.name])
                result["wall_s"] = round(time.perf_counter() - t0, 2)
                main, main_cpu = result.pop("main"), result.pop("main_cpu")
                doc["benchmarks"][name][shape.name] = result
                entry = {**main, "cpu": {k: v for k, v in main_cpu.items() if k != "per_rep"}}
                entry["goal"] = GOALS[name]
                entry["met"] = bool(main["median"] <= GOALS[name])
                doc["ratios"][name][shape.name] = entry
                log.info("%s on %s: median ratio %.3f [%.3f, %.3f], CPU time %.3f (%.1f s)", name, shape.name,
                         main["median"], main["min"], main["max"], main_cpu["median"], result["wall_s"])
                if out is not None:
                    atomic_write_json(out, doc)
            del model
            gc.collect()
    doc["complete"] = True
    if out is not None:
        atomic_write_json(out, doc)
    return doc


def table(doc: dict[str, Any]) -> str:
    """The headline ratios as a fixed-width table: wall-clock median [min, max], and the CPU-time median."""
    lines = [f"{'benchmark':27s} {'model':19s} {'median':>7s} {'min':>7s} {'max':>7s} {'cpu':>7s} {'goal':>6s}  met"]
    for name in RATIO_KEYS:
        for model, r in doc["ratios"].get(name, {}).items():
            lines.append(f"{name:27s} {model:19s} {r['median']:7.3f} {r['min']:7.3f} {r['max']:7.3f} "
                         f"{r['cpu']['median']:7.3f} {r['goal']:6.2f}  {'yes' if r['met'] else 'no'}")
    return "\n".join(lines)


def bench_parser(doc: str, models: dict, benchmarks: dict, out: Path) -> argparse.ArgumentParser:
    """The command-line options every benchmark script shares (models, benchmarks, repetitions, threads, cache, out)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and tokens (a smoke run)")
    parser.add_argument("--models", default=",".join(models), help=f"comma-separated, of: {', '.join(models)}")
    parser.add_argument("--benchmarks", default=",".join(benchmarks), help=f"comma-separated, of: {', '.join(benchmarks)}")
    parser.add_argument("--reps", type=int, help="override the repetitions of every plan")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine, a stolen core stalls every multi-threaded op)")
    parser.add_argument("--cache", type=Path, help="build the models here once and reuse them (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=out, help=f"results JSON (default: {out.relative_to(ROOT)})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every repetition")
    return parser


def start_logging(verbose: bool) -> None:
    """INFO (DEBUG with -v) to stderr, HTTP and lock chatter muted."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, MODELS, BENCHMARKS, RESULTS)
    parser.add_argument("--warmup", type=int, help="override the warm-up runs of every plan")
    parser.add_argument("--sweep-tokens", type=int, help="override the new tokens of sweep_batched_vs_separate")
    parser.add_argument("--e2e", action="store_true",
                        help="only the end-to-end timings: a cold one-family organism build and a warm make run (most of an hour)")
    parser.add_argument("--e2e-family", default="llama", help="the organism family of the cold build (default llama)")
    parser.add_argument("--e2e-organisms", type=Path, help="the organism cache of the warm run (default: make run's)")
    parser.add_argument("--e2e-outputs", type=Path, help="the output folder of the warm run (default: make run's)")
    args = parser.parse_args(argv)
    start_logging(args.verbose)

    if args.e2e:
        try:
            measured = run_end_to_end(args.e2e_family, args.e2e_organisms, args.e2e_outputs, args.out)
        except RuntimeError as err:  # a failed run: one line naming its log, nothing written
            log.error("%s", err)
            return 1
        log.info("end to end: cold %s build %.0f s, warm make run %.0f s; wrote %s", args.e2e_family,
                 measured["cold_build_one_family"]["seconds"], measured["warm_make_run"]["seconds"], E2E)
        return 0
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    chosen = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    unknown = [m for m in names if m not in MODELS] + [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown model or benchmark: {', '.join(unknown)}")
    plans = {m: PLANS[(m, args.quick)] for m in names}
    if args.reps:
        plans = {m: replace(p, reps=args.reps, sweep_reps=None, recapture_reps=min(p.recapture_reps, args.reps))
                 for m, p in plans.items()}
    if args.warmup is not None:
        plans = {m: replace(p, warmup=args.warmup) for m, p in plans.items()}
    if args.sweep_tokens:
        plans = {m: replace(p, sweep_tokens=args.sweep_tokens) for m, p in plans.items()}
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(sys.argv[1:] if argv is None else argv)])
    doc = run_suite([MODELS[m] for m in names], plans, args.threads, args.cache, chosen, command, args.out, args.quick)
    log.info("ratios (emis / baseline, per-repetition median [min, max]):\n%s", table(doc))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
