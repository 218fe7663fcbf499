"""emis against its peers, steering-vectors and repeng, timed side by side in one process.

    python benchmarks/peers.py [--quick] [--models llama-organism,llama-3.2-1b-shape] [--peers steering-vectors,repeng]

Same method as benchmarks/run.py, whose helpers this reuses: random-weight models built here and loaded
through `emis.models.load_model`, the same inputs and thread count on both sides, interleaved repetitions
after warm-up, per-repetition ratios (emis time / peer time) summarised by median, min and max. The peers
run on a plain transformers copy of the same weights, which nnsight never instrumented (repeng's
ControlModel rewrites the model it wraps). Before any timing each pair is checked, untimed, to compute the
same thing: identical captures, identical generated tokens. Results go to benchmarks/peers.json.

Both peers steer every position (their defaults; repeng skips left padding), so emis runs with
`Steering(where="all")` throughout.
"""

from __future__ import annotations

import gc
import logging
import os
import shlex
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/peers.py` puts benchmarks/, not the checkout, on the path
    sys.path.insert(0, str(ROOT))

from benchmarks.run import (QUESTIONS, ModelShape, bench_parser, cut, encode, forward_inputs, fresh_hf_model,  # noqa: E402
                            hook_capture, machine_info, plain_generate, prepare_model, prompts_for, steering_vector,
                            start_logging, steps_taken, stop_ids, timed)
from emis.activations import capture_residuals  # noqa: E402
from emis.generation import Steering, generate_steered  # noqa: E402
from emis.io import atomic_write_json  # noqa: E402
from emis.models import LoadedModel  # noqa: E402
from emis.organisms.families import ArchSize  # noqa: E402
from emis.organisms.sample import SamplingConfig  # noqa: E402

log = logging.getLogger("emis.bench.peers")

OUT = ROOT / "benchmarks" / "peers.json"
PEERS = ("steering-vectors", "repeng")
PINNED = {"steering-vectors": "0.12.2", "repeng": "0.4.0"}
BENCHMARK_KEYS = ("capture_all_layers", "steered_generate", "ablate_generate", "sweep_k8")
# Powers of two: for a vector exact in bfloat16, c*v is too, so every side adds the very same bf16 numbers.
SWEEP_COEFFICIENTS = (-2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0)
ALPHA = 1.0  # steered_generate subtracts ALPHA * v


def organism_size(family: str) -> ArchSize:
    """The organism architecture of `family` as conf/organisms/default.yaml sets it."""
    conf = yaml.safe_load((ROOT / "conf" / "organisms" / "default.yaml").read_text(encoding="utf-8"))
    return ArchSize(**conf["families"][family]["size"])


MODELS: dict[str, ModelShape] = {
    # The llama organism's size, loaded as the organisms are (exactly the saved tokenizer.json). Initialised at 0.1,
    # not 0.02: at 0.02 its greedy answers repeat one or two tokens, which makes equal tokens weak evidence.
    "llama-organism": ModelShape("llama-organism", organism_size("llama"), "float32", tokenizer_vocab=2048,
                                 init_range=0.1, tokenizer="saved", family="llama"),
    # meta-llama/Llama-3.2-1B's published config.json (rope_scaling "llama3" left out: it only rescales
    # frequencies, at the same cost), random weights, bfloat16 like the published weights.
    "llama-3.2-1b-shape": ModelShape("llama-3.2-1b-shape", ArchSize(2048, 16, 32, 8, 8192, 128256, 131072), "bfloat16",
                                     tokenizer_vocab=4096, rope_theta=500_000.0, extra={"rms_norm_eps": 1e-5},
                                     family="llama"),
}


@dataclass(frozen=True)
class PeerPlan:
    """How much work each peer benchmark does on one model."""

    reps: int
    warmup: int
    capture_prompts: int  # rows of the one capture batch
    gen_prompts: int  # rows of steered_generate and ablate_generate
    gen_tokens: int
    sweep_prompts: int  # prompts of the sweep (rows: coefficients x prompts)
    sweep_tokens: int
    sweep_reps: int | None = None  # repetitions of sweep_k8 (None: reps)


PLANS: dict[tuple[str, bool], PeerPlan] = {  # (model, quick) -> plan
    ("llama-organism", False): PeerPlan(reps=15, warmup=2, capture_prompts=4, gen_prompts=4, gen_tokens=32,
                                        sweep_prompts=2, sweep_tokens=16),
    ("llama-organism", True): PeerPlan(reps=3, warmup=1, capture_prompts=4, gen_prompts=2, gen_tokens=8,
                                       sweep_prompts=1, sweep_tokens=4),
    ("llama-3.2-1b-shape", False): PeerPlan(reps=7, warmup=1, capture_prompts=4, gen_prompts=2, gen_tokens=8,
                                            sweep_prompts=1, sweep_tokens=8, sweep_reps=3),
    ("llama-3.2-1b-shape", True): PeerPlan(reps=2, warmup=1, capture_prompts=2, gen_prompts=1, gen_tokens=4,
                                           sweep_prompts=1, sweep_tokens=4, sweep_reps=1),
}


# ---------------------------------------------------------------- peers


def import_repeng() -> Any:
    """repeng 0.4.0: its extract.py annotates with `np.float_`, gone in numpy 2, so that alias exists only
    while it is imported (none of the calls used here touch numpy)."""
    missing = not hasattr(np, "float_")
    if missing:
        np.float_ = np.float64  # type: ignore[attr-defined]
    try:
        import repeng
        import repeng.extract
    finally:
        if missing:
            del np.float_  # type: ignore[attr-defined]
    return repeng


@dataclass(frozen=True)
class Case:
    """What every benchmark on one model shares: emis's model, the peers' plain copy, the plan, the steered
    layer, the subtracted vector v and the ablated direction u (both exact in the model's dtype)."""

    model: LoadedModel
    hf: Any
    plan: PeerPlan
    layer: int
    v: torch.Tensor
    u: torch.Tensor

    def generate(self, prompts: list[str], new_tokens: int, hf: Any = None) -> list[list[int]]:
        """Greedy `generate` on the plain copy (or `hf`), cut at end-of-turn as emis cuts its answers."""
        return cut(plain_generate(self.model, prompts, new_tokens, hf=hf if hf is not None else self.hf),
                   stop_ids(self.model))


def exact_in(dtype: torch.dtype, v: torch.Tensor) -> torch.Tensor:
    """float32 `v` rounded to `dtype` and back: the same numbers whichever side converts them."""
    return v.to(dtype).float()


def make_case(model: LoadedModel, plan: PeerPlan) -> Case:
    """The shared setup: v as long as the steered layer's mean residual, u the layer's mean residual itself
    (so removing it visibly changes the answers)."""
    layer, dtype = model.n_layers // 2, getattr(torch, model.spec.dtype)
    prompts = prompts_for(model, QUESTIONS, plan.gen_prompts)
    v = exact_in(dtype, steering_vector(model, 0, layer, prompts))
    u = exact_in(dtype, hook_capture(model, prompts)[:, layer].mean(0))
    return Case(model, fresh_hf_model(model), plan, layer, v, u)


class Peer(Protocol):
    """A peer library driven the way its documentation drives it, on the case's plain copy."""

    name: str
    capture_note: str  # how its capture's inputs relate to emis's
    sweep_how: str
    sweep_batched: bool  # True: the sweep's rows run in one generate, as emis's do
    no_ablation: str | None  # why the peer cannot ablate; None when it can

    def capture(self, prompts: list[str]) -> torch.Tensor: ...
    def comparable(self, emis_acts: torch.Tensor) -> torch.Tensor: ...
    def steer(self, prompts: list[str], coefficient: float, new_tokens: int) -> list[list[int]]: ...
    def ablate(self, prompts: list[str], new_tokens: int, in_float32: bool = False) -> list[list[int]]: ...
    def sweep(self, prompts: list[str], coefficients: tuple[float, ...], new_tokens: int) -> list[list[list[int]]]: ...


class SteeringVectorsPeer:
    """steering-vectors: `record_activations` hooks, `SteeringVector.apply` (adds multiplier * v at every
    position: `min_token_index=0`), `ablation_operator()`; no per-row coefficients, so a sweep is one call each."""

    name = "steering-vectors"
    capture_note = "the same ids, mask and position ids as emis's trace"
    sweep_how = "one generate per coefficient (SteeringVector takes one scalar multiplier)"
    sweep_batched = False
    no_ablation = None

    def __init__(self, case: Case) -> None:
        import steering_vectors

        self.sv, self.case = steering_vectors, case
        self.dtype = getattr(torch, case.model.spec.dtype)

    def capture(self, prompts: list[str]) -> torch.Tensor:
        """[B, L, d] float32: every decoder block's output recorded, read at the last prompt token."""
        inputs = forward_inputs(self.case.model, prompts)
        with torch.no_grad(), self.sv.record_activations(self.case.hf, layer_type="decoder_block") as rec:
            self.case.hf(**inputs)
        return torch.stack([rec[i][0][:, -1].float() for i in range(len(rec))], dim=1)

    def comparable(self, emis_acts: torch.Tensor) -> torch.Tensor:
        return emis_acts

    def steer(self, prompts: list[str], coefficient: float, new_tokens: int) -> list[list[int]]:
        vector = self.sv.SteeringVector({self.case.layer: self.case.v})
        with vector.apply(self.case.hf, multiplier=-coefficient):
            return self.case.generate(prompts, new_tokens)

    def ablate(self, prompts: list[str], new_tokens: int, in_float32: bool = False) -> list[list[int]]:
        """Its operator computes h @ u in the model's dtype (so u goes in that dtype); `in_float32` evaluates that
        same operator on float32 copies instead, its delta then rounded once into the model's dtype, as emis rounds."""
        vector = self.sv.SteeringVector({self.case.layer: self.case.u.to(self.dtype)})
        op = self.sv.ablation_operator()
        operator = (lambda h, target: op(h.float(), target.float())) if in_float32 else op
        with vector.apply(self.case.hf, operator=operator):
            return self.case.generate(prompts, new_tokens)

    def sweep(self, prompts: list[str], coefficients: tuple[float, ...], new_tokens: int) -> list[list[list[int]]]:
        return [self.steer(prompts, c, new_tokens) for c in coefficients]


class RepengPeer:
    """repeng: `batched_get_hiddens` (the reading `ControlVector.train` does: `output_hidden_states`, last
    non-padding token), `ControlModel(...).set_raw_control` (adds the control at every non-padding position;
    a [B, 1, d] control gives each row its own coefficient). It has no ablation."""

    name = "repeng"
    capture_note = ("its forward gets no position_ids, so a left-padded row's positions count from its padding: the "
                    "same in exact arithmetic (RoPE is shift-invariant), not in rounding")
    sweep_how = "one generate, per-row coefficients through set_raw_control with a [rows, 1, d] control"
    sweep_batched = True
    no_ablation = ("repeng 0.4.0 has no ablation: ControlModel only adds a control vector (its `operator` "
                   "argument could be given a hand-written projection, which would be our code, not the peer's)")

    def __init__(self, case: Case, control_model: Any) -> None:
        self.repeng, self.case, self.cm = import_repeng(), case, control_model
        self.dtype = getattr(torch, case.model.spec.dtype)

    def capture(self, prompts: list[str]) -> torch.Tensor:
        """[B, L, d] float32 from transformers' hidden states (of which the last is after the final norm)."""
        model = self.case.model
        hiddens = self.repeng.extract.batched_get_hiddens(self.case.hf, model.tokenizer, prompts,
                                                          list(range(model.n_layers)), len(prompts))
        return torch.stack([torch.from_numpy(hiddens[i]) for i in range(model.n_layers)], dim=1)

    def comparable(self, emis_acts: torch.Tensor) -> torch.Tensor:
        """emis's capture as repeng reports it: the last layer through the model's final norm."""
        out = emis_acts.clone()
        with torch.no_grad():
            out[:, -1] = self.case.hf.model.norm(emis_acts[:, -1].to(self.dtype)).float()
        return out

    def _generate(self, prompts: list[str], control: torch.Tensor, new_tokens: int) -> list[list[int]]:
        self.cm.set_raw_control({self.case.layer: control.to(self.dtype)})
        try:
            return self.case.generate(prompts, new_tokens, hf=self.cm)
        finally:
            self.cm.reset()

    def steer(self, prompts: list[str], coefficient: float, new_tokens: int) -> list[list[int]]:
        return self._generate(prompts, -coefficient * self.case.v, new_tokens)

    def ablate(self, prompts: list[str], new_tokens: int, in_float32: bool = False) -> list[list[int]]:
        raise NotImplementedError(self.no_ablation)

    def sweep(self, prompts: list[str], coefficients: tuple[float, ...], new_tokens: int) -> list[list[list[int]]]:
        rows = torch.stack([-c * self.case.v for c in coefficients for _ in prompts])[:, None, :]
        out = self._generate([p for _ in coefficients for p in prompts], rows, new_tokens)
        return [out[k * len(prompts) : (k + 1) * len(prompts)] for k in range(len(coefficients))]


@contextmanager
def open_peer(name: str, case: Case) -> Iterator[Peer]:
    """The named peer set up on the case's plain copy, and taken off it afterwards (repeng's wrapper)."""
    if name == "steering-vectors":
        yield SteeringVectorsPeer(case)
        return
    if name == "repeng":
        cm = import_repeng().ControlModel(case.hf, [case.layer])
        try:
            yield RepengPeer(case, cm)
        finally:
            cm.unwrap()
        return
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")


# ---------------------------------------------------------------- benchmarks


def emis_generate(case: Case, steerings: list[Steering], prompts: list[str], new_tokens: int) -> list[list[list[int]]]:
    """emis's greedy steered tokens, per steering then prompt: every steering a set of rows of one batch."""
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens, batch_size=len(steerings) * len(prompts), seed=0)
    return generate_steered(case.model, prompts, steerings, cfg, progress=False).tokens


def prefill_only(case: Case, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """The steered generation a faulty hook would give, subtracting ALPHA * v in the prefill only."""

    def subtract(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        if h.shape[1] > 1:
            h -= (ALPHA * case.v).to(h.dtype)
        return output

    handle = case.hf.model.layers[case.layer].register_forward_hook(subtract)
    try:
        return case.generate(prompts, new_tokens)
    finally:
        handle.remove()


def timed_pair(case: Case, peer: Peer, ours: Callable[[], Any], theirs: Callable[[], Any], reps: int | None = None
               ) -> dict[str, Any]:
    """emis and the peer interleaved; `main` is emis time / peer time per repetition."""
    fns = {"emis": ours, peer.name: theirs}
    return timed(fns, reps or case.plan.reps, case.plan.warmup, {"emis_vs_peer": ("emis", peer.name)}, "emis_vs_peer")


def token_checks(ours: list[list[int]], theirs: list[list[int]], plain: list[list[int]], new_tokens: int
                 ) -> dict[str, Any]:
    """Equal tokens, steering visible against plain generation, and the decode steps each side ran."""
    steps = {"emis": steps_taken([len(t) for t in ours], new_tokens),
             "peer": steps_taken([len(t) for t in theirs], new_tokens)}
    return {"tokens_equal": ours == theirs, "steering_changed_tokens": ours != plain,
            "rows_equal": sum(a == b for a, b in zip(ours, theirs)), "rows": len(ours),
            "decode_steps": steps, "same_steps": steps["emis"] == steps["peer"]}


def bench_capture(case: Case, peer: Peer) -> dict[str, Any]:
    """capture_all_layers: every decoder layer's residual at the last prompt token of one batch."""
    model, prompts = case.model, prompts_for(case.model, QUESTIONS, case.plan.capture_prompts)

    def ours() -> torch.Tensor:
        return capture_residuals(model, prompts, "all", "last_prompt", batch_size=len(prompts), progress=False).activations

    expected, got = peer.comparable(ours()), peer.capture(prompts)
    scale = float(expected.abs().max())
    row_diff = (expected - got).abs().flatten(1).amax(1)
    padded = ~encode(model, prompts)["attention_mask"].bool().all(1)
    checks = {"max_abs_diff": float(row_diff.max()), "max_rel_diff": float(row_diff.max()) / scale,
              "row_max_abs_diff": row_diff.tolist(), "padded_rows": padded.tolist(), "shape": list(got.shape),
              "equal": bool((row_diff <= 1e-5 * scale).all()),
              "equal_unpadded_rows": bool((row_diff[~padded] <= 1e-5 * scale).all()), "inputs": peer.capture_note}
    if not checks["equal"] and checks["equal_unpadded_rows"]:
        checks["equal_note"] = f"unpadded rows identical; padded rows differ by rounding: {peer.capture_note}"
    return {"prompts": len(prompts), "prompt_tokens": int(encode(model, prompts)["input_ids"].shape[1]),
            **timed_pair(case, peer, ours, lambda: peer.capture(prompts)), "checks": checks}


def bench_steered(case: Case, peer: Peer) -> dict[str, Any]:
    """steered_generate: subtract ALPHA * v at one layer on every forward, greedy, fixed length."""
    prompts, n = prompts_for(case.model, QUESTIONS, case.plan.gen_prompts), case.plan.gen_tokens
    steering = [Steering({case.layer: case.v}, ALPHA, where="all")]
    ours = emis_generate(case, steering, prompts, n)[0]
    checks = {**token_checks(ours, peer.steer(prompts, ALPHA, n), case.generate(prompts, n), n),
              "prefill_only_differs": ours != prefill_only(case, prompts, n)}
    checks["equal"] = checks["tokens_equal"] and checks["steering_changed_tokens"]
    return {"prompts": len(prompts), "new_tokens": n, "layer": case.layer, "alpha": ALPHA,
            **timed_pair(case, peer, lambda: emis_generate(case, steering, prompts, n),
                         lambda: peer.steer(prompts, ALPHA, n)), "checks": checks}


def bench_ablate(case: Case, peer: Peer) -> dict[str, Any]:
    """ablate_generate: remove h's component along u at one layer on every forward, greedy, fixed length."""
    if peer.no_ablation is not None:
        return {"skipped": peer.no_ablation}
    prompts, n = prompts_for(case.model, QUESTIONS, case.plan.gen_prompts), case.plan.gen_tokens
    steering = [Steering({case.layer: case.u}, 1.0, mode="ablate", where="all")]
    ours = emis_generate(case, steering, prompts, n)[0]
    checks = token_checks(ours, peer.ablate(prompts, n), case.generate(prompts, n), n)
    checks["equal"] = checks["tokens_equal"] and checks["steering_changed_tokens"]
    if case.model.spec.dtype != "float32":
        checks["tokens_equal_operator_in_float32"] = ours == peer.ablate(prompts, n, in_float32=True)
        if not checks["tokens_equal"] and checks["tokens_equal_operator_in_float32"]:
            checks["equal_note"] = (f"tokens differ: the peer evaluates its operator in {case.model.spec.dtype}, emis in "
                                    "float32 (rounding once); with the peer's operator evaluated in float32 they are identical")
    return {"prompts": len(prompts), "new_tokens": n, "layer": case.layer,
            **timed_pair(case, peer, lambda: emis_generate(case, steering, prompts, n),
                         lambda: peer.ablate(prompts, n)), "checks": checks}


def bench_sweep(case: Case, peer: Peer) -> dict[str, Any]:
    """sweep_k8: the 8 coefficients as rows of one emis generate vs the peer's best way. The tokens are checked
    against emis run the peer's way (batched, or one call per coefficient), which computes the same numbers."""
    prompts, n = prompts_for(case.model, QUESTIONS, case.plan.sweep_prompts), case.plan.sweep_tokens
    steerings = [Steering({case.layer: case.v}, c, where="all") for c in SWEEP_COEFFICIENTS]
    batched = emis_generate(case, steerings, prompts, n)
    theirs = peer.sweep(prompts, SWEEP_COEFFICIENTS, n)
    checks: dict[str, Any] = {"peer_way": peer.sweep_how}
    if peer.sweep_batched:
        reference = batched
    else:
        reference = [emis_generate(case, [s], prompts, n)[0] for s in steerings]
        # rows of a bigger batch may round differently (bfloat16): reported, not required
        checks["emis_batched_equals_separate"] = batched == reference
    flat = [row for per_c in reference for row in per_c]
    checks.update(token_checks(flat, [row for per_c in theirs for row in per_c],
                               [row for _ in SWEEP_COEFFICIENTS for row in case.generate(prompts, n)], n))
    checks["equal"] = checks["tokens_equal"]
    return {"k": len(SWEEP_COEFFICIENTS), "coefficients": list(SWEEP_COEFFICIENTS), "prompts": len(prompts),
            "new_tokens": n, "layer": case.layer,
            **timed_pair(case, peer, lambda: emis_generate(case, steerings, prompts, n),
                         lambda: peer.sweep(prompts, SWEEP_COEFFICIENTS, n), case.plan.sweep_reps), "checks": checks}


BENCHMARKS: dict[str, Callable[[Case, Peer], dict[str, Any]]] = {
    "capture_all_layers": bench_capture,
    "steered_generate": bench_steered,
    "ablate_generate": bench_ablate,
    "sweep_k8": bench_sweep,
}


# ---------------------------------------------------------------- driver


def peer_info() -> dict[str, Any]:
    """Installed versions of the peers (and numpy, whose 2.x repeng's pin excludes), with what was needed to run them."""
    return {
        "versions": {name: version(name) for name in (*PEERS, "gguf", "numpy")},
        "pinned": PINNED,
        "compatibility": {
            "steering-vectors": "pins transformers<5; the calls used (record_activations, SteeringVector.apply, "
                                "ablation_operator) run unchanged on transformers 5",
            "repeng": "pins numpy<2 and needs gguf (installed --no-deps); its extract.py annotates with np.float_, "
                      "removed in numpy 2, so the import runs with that alias set (import_repeng); ControlModel, "
                      "set_raw_control and batched_get_hiddens use no numpy 1 API",
        },
    }


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The ratio entry of one benchmark: wall-time summary, CPU-time summary, and whether the checks held."""
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    main, cpu = result.pop("main"), result.pop("main_cpu")
    checks = result["checks"]
    return {**main, "cpu": {k: v for k, v in cpu.items() if k != "per_rep"}, "le_1": bool(main["median"] <= 1.0),
            "equal": bool(checks["equal"]), **({"equal_note": checks["equal_note"]} if "equal_note" in checks else {})}


def run_peers(shapes: list[ModelShape], plans: dict[str, PeerPlan], threads: int, cache: Path | None = None,
              peers: list[str] | None = None, benchmarks: list[str] | None = None, command: str = "",
              out: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Every chosen benchmark for every peer on every model; the document is written to `out` after each
    benchmark (`complete` false until the end)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    chosen_peers, chosen = peers or list(PEERS), benchmarks or list(BENCHMARKS)
    doc: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command, "quick": quick,
        "machine": machine_info(threads), "peers": peer_info(), "goal": "ratio (emis / peer) <= 1.0",
        "models": {}, "ratios": {p: {b: {} for b in chosen} for p in chosen_peers},
        "benchmarks": {p: {b: {} for b in chosen} for p in chosen_peers}, "complete": False,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="emis-peers-") as scratch:
            for shape in shapes:
                model, info = prepare_model(shape, cache, Path(scratch))
                case = make_case(model, plans[shape.name])
                doc["models"][shape.name] = {**info, "plan": asdict(case.plan), "layer": case.layer}
                for name in chosen_peers:
                    with open_peer(name, case) as peer:
                        for bench in chosen:
                            t0 = time.perf_counter()
                            result = BENCHMARKS[bench](case, peer)
                            result["wall_s"] = round(time.perf_counter() - t0, 2)
                            entry = headline(result)
                            doc["benchmarks"][name][bench][shape.name] = result
                            doc["ratios"][name][bench][shape.name] = entry
                            log.info("%s / %s on %s: %s", name, bench, shape.name, describe(entry))
                            if out is not None:
                                atomic_write_json(out, doc)
                del model, case
                gc.collect()
    finally:
        torch.set_num_threads(previous)
    doc["complete"] = True
    if out is not None:
        atomic_write_json(out, doc)
    return doc


def describe(entry: dict[str, Any]) -> str:
    """One ratio entry in words."""
    if "skipped" in entry:
        return "skipped"
    return (f"median {entry['median']:.3f} [{entry['min']:.3f}, {entry['max']:.3f}], CPU {entry['cpu']['median']:.3f}, "
            f"checks {'equal' if entry['equal'] else 'NOT EQUAL'}")


def table(doc: dict[str, Any]) -> str:
    """Every ratio as a fixed-width table: wall-clock median [min, max], CPU-time median, ≤ 1, checks."""
    lines = [f"{'peer':17s} {'benchmark':19s} {'model':19s} {'median':>7s} {'min':>7s} {'max':>7s} {'cpu':>7s}  <=1  equal"]
    for peer, per_bench in doc["ratios"].items():
        for bench, per_model in per_bench.items():
            for model, r in per_model.items():
                if "skipped" in r:
                    lines.append(f"{peer:17s} {bench:19s} {model:19s} {'skipped':>7s}")
                    continue
                lines.append(f"{peer:17s} {bench:19s} {model:19s} {r['median']:7.3f} {r['min']:7.3f} {r['max']:7.3f} "
                             f"{r['cpu']['median']:7.3f}  {'yes' if r['le_1'] else 'no ':3s}  {'yes' if r['equal'] else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, MODELS, BENCHMARKS, OUT)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of: {', '.join(PEERS)}")
    args = parser.parse_args(argv)
    start_logging(args.verbose)
    lists = {k: [x.strip() for x in getattr(args, k).split(",") if x.strip()] for k in ("models", "peers", "benchmarks")}
    known = {"models": MODELS, "peers": PEERS, "benchmarks": BENCHMARKS}
    unknown = [x for k, xs in lists.items() for x in xs if x not in known[k]]
    if unknown:
        parser.error(f"unknown model, peer or benchmark: {', '.join(unknown)}")
    plans = {m: PLANS[(m, args.quick)] for m in lists["models"]}
    if args.reps:
        plans = {m: replace(p, reps=args.reps, sweep_reps=None) for m, p in plans.items()}
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *(sys.argv[1:] if argv is None else argv)])
    doc = run_peers([MODELS[m] for m in lists["models"]], plans, args.threads, args.cache, lists["peers"],
                    lists["benchmarks"], command, args.out, args.quick)
    log.info("ratios (emis / peer, per-repetition median [min, max]):\n%s", table(doc))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
