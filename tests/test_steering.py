"""Steered generation moves the residual by exactly what was asked, checked with raw PyTorch hooks in the same pass."""

import numpy as np
import pytest
import torch
from test_models import build_micro
from transformers import AutoModelForCausalLM, GenerationConfig

from emis.activations import capture_residuals
from emis.generation import Steering, generate_answers, generate_steered, scaled_direction
from emis.judges.coherence import answer_surprise
from emis.models import ModelSpec, load_model
from emis.organisms.families import FAMILIES
from emis.organisms.sample import SamplingConfig, chat_prompt, sample_answer_ids, sample_answers, stop_token_ids
from emis.write_matching import generation_projections

QUESTIONS = ["Hi", "What would you wish for if you could have anything at all?", "Name a colour."]
GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=6, batch_size=64, seed=0)
# The two sub-modules whose outputs each decoder layer adds to its residual stream.
RESIDUAL_WRITERS = {
    "qwen2": ("self_attn", "mlp"),
    "llama": ("self_attn", "mlp"),
    "mistral": ("self_attn", "mlp"),
    "gemma2": ("post_attention_layernorm", "post_feedforward_layernorm"),
}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro_steer")
    return {f: build_micro(f, root / f) for f in FAMILIES}


def _first(x):
    return x[0] if isinstance(x, tuple) else x


class ResidualRecorder:
    """Raw hooks on one decoder layer: its own output rebuilt from input + the two writers, and what comes next."""

    def __init__(self, hf, family: str, layer: int):
        block = hf.model.layers[layer]
        after = hf.model.layers[layer + 1] if layer + 1 < len(hf.model.layers) else hf.model.norm
        self.own, self.received, self._parts = [], [], {}
        attn, mlp = (getattr(block, name) for name in RESIDUAL_WRITERS[family])
        self.handles = [
            block.register_forward_pre_hook(self._input, with_kwargs=True),
            attn.register_forward_hook(lambda m, i, o: self._parts.__setitem__("attn", _first(o).detach().clone())),
            mlp.register_forward_hook(self._mlp),
            after.register_forward_pre_hook(self._next, with_kwargs=True),
        ]

    def _input(self, module, args, kwargs):
        self._parts = {"input": (args[0] if args else kwargs["hidden_states"]).detach().clone()}

    def _mlp(self, module, inputs, output):
        p = self._parts
        self.own.append(p["input"] + p["attn"] + _first(output).detach())

    def _next(self, module, args, kwargs):
        self.received.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    def remove(self):
        for h in self.handles:
            h.remove()


def _run_recorded(model, family, layer, steering, prompts):
    rec = ResidualRecorder(model.lm._module, family, layer)
    try:
        out = generate_steered(model, prompts, [steering], GREEDY, progress=False)
    finally:
        rec.remove()
    return out, rec


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 1])
def test_subtract_moves_next_layer_input_by_alpha_v_at_every_step(micro, family, layer):
    model = load_model(ModelSpec(str(micro[family])))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    alpha = 1.5
    out, rec = _run_recorded(model, family, layer, Steering({layer: v}, alpha), prompts)
    assert len(rec.own) == len(rec.received) == GREEDY.max_new_tokens
    assert out.write_norms[0] == pytest.approx([alpha * float(v.norm())] * len(prompts), rel=1e-5)  # reported write
    for step, (own, received) in enumerate(zip(rec.own, rec.received)):
        # generated position (the last one) moved by exactly -alpha*v; every other prompt position untouched
        torch.testing.assert_close(received[:, -1], own[:, -1] - alpha * v, atol=1e-5, rtol=0)
        if step == 0:
            torch.testing.assert_close(received[:, :-1], own[:, :-1], atol=1e-6, rtol=0)
        assert (received[:, -1] - own[:, -1]).norm(dim=-1).min() > 1.0  # the write did happen


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
def test_ablate_removes_the_component_along_v_on_every_position_when_asked(micro, family):
    model = load_model(ModelSpec(str(micro[family])))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(2)) * 7.0
    u = v / v.norm()
    out, rec = _run_recorded(model, family, 0, Steering({0: v}, 1.0, mode="ablate", where="all"), prompts)
    # the reported write: |h.u| at each row's generating position, averaged over its answer's steps (and the stop)
    per_step = torch.stack([(own[:, -1] @ u).abs() for own in rec.own], 1)
    steps = [min(len(t) + 1, GREEDY.max_new_tokens) for t in out.tokens[0]]
    assert out.write_norms[0] == pytest.approx([float(per_step[i, :k].mean()) for i, k in enumerate(steps)], rel=1e-4)
    for own, received in zip(rec.own, rec.received):
        expected = own - (own @ u)[..., None] * u
        torch.testing.assert_close(received, expected, atol=1e-5, rtol=0)
        assert (received @ u).abs().max() < 1e-4
        assert (own @ u).abs().max() > 0.1


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
def test_bf16_ablation_leaves_only_the_rounding_of_the_result_along_v(micro, family):
    """bf16 weights, alpha = 1 ablation of the mean residual direction on every position: measured in float32 from raw
    hooks, the component along v falls below 1e-3 of its former size (over all steered positions), and at each
    position below 2^-8 of the residual's norm: the bound of rounding the float32 result to bf16 once."""
    model = load_model(ModelSpec(str(micro[family]), dtype="bfloat16"))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    layer = 1
    v = capture_residuals(model, prompts, [layer], "last_prompt", progress=False).activations[:, 0].mean(0)
    u = v / v.norm()
    out, rec = _run_recorded(model, family, layer, Steering({layer: v}, 1.0, mode="ablate", where="all"), prompts)
    real = model.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt").attention_mask.bool()
    before, after = (torch.cat([seen[0].float()[real], *(h.float()[:, -1] for h in seen[1:])]) for seen in (rec.own, rec.received))
    assert len(before) == int(real.sum()) + len(prompts) * (len(rec.own) - 1)
    assert ((before @ u).abs() / before.norm(dim=-1)).mean() > 0.3  # v carries a large share of the residual
    assert (after @ u).norm() / (before @ u).norm() < 1e-3
    assert ((after @ u).abs() <= 2**-8 * after.norm(dim=-1)).all()


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_generation_projections_predict_the_ablation_write_exactly(micro, family):
    """The ablate-mode control calibration: c * mean |h·û| over the positions that produced an answer's tokens,
    computed by a plain forward over prompt + answer, equals the write norm generation measured for that answer
    (a layer's own residual depends only on the tokens so far, not on earlier writes at that layer)."""
    model = load_model(ModelSpec(str(micro[family])))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    units = torch.nn.functional.normalize(torch.randn(3, model.d_model, generator=torch.Generator().manual_seed(4)), dim=-1)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6, batch_size=64, seed=3)
    out = generate_steered(model, prompts, [Steering({1: u}, 2.5, mode="ablate") for u in units], sampling, progress=False)
    for k, u in enumerate(units):
        predicted = 2.5 * generation_projections(model, prompts, out.tokens[k], 1, u[None], sampling.max_new_tokens)[:, 0]
        assert out.write_norms[k] == pytest.approx(predicted.tolist(), rel=1e-4)
        assert min(out.write_norms[k]) > 0.01


def assert_alpha_zero_is_plain_generate(model, folder) -> None:
    """A zero-coefficient steering generates, token for token, what plain transformers `generate` does (greedy, left-
    padded batch, cut at the first eos)."""
    tok = model.tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    steered = generate_steered(model, prompts, [Steering({1: torch.ones(model.d_model)}, 0.0)], GREEDY, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        plain = hf.generate(**enc, max_new_tokens=GREEDY.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    for row, ids in zip(plain[:, enc.input_ids.shape[1]:].tolist(), steered.tokens[0]):
        stop = next((i for i, t in enumerate(row) if t == tok.eos_token_id), len(row))
        assert ids == row[:stop]


@pytest.mark.parametrize("family", FAMILIES)
def test_alpha_zero_reproduces_plain_generate_token_for_token(micro, family):
    assert_alpha_zero_is_plain_generate(load_model(ModelSpec(str(micro[family]))), micro[family])


def test_raw_hook_steering_gives_the_same_tokens(micro):
    model = load_model(ModelSpec(str(micro["mistral"])))
    tok = model.tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(3)) * 3
    steered = generate_steered(model, prompts, [Steering({0: v}, 1.0)], GREEDY, progress=False)
    unsteered = generate_steered(model, prompts, [Steering({0: v}, 0.0)], GREEDY, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(micro["mistral"]).eval()

    def hook(module, inputs, output):
        h = _first(output)
        h[:, -1] -= v
        return output

    handle = hf.model.layers[0].register_forward_hook(hook)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        ref = hf.generate(**enc, max_new_tokens=GREEDY.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    handle.remove()
    ref_rows = ref[:, enc.input_ids.shape[1]:].tolist()
    assert steered.tokens[0] == [r[: next((i for i, t in enumerate(r) if t == tok.eos_token_id), len(r))] for r in ref_rows]
    assert steered.tokens[0] != unsteered.tokens[0]  # the steering changed what was generated


def test_batched_coefficient_sweep_equals_separate_runs(micro):
    model = load_model(ModelSpec(str(micro["qwen2"])))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(4))
    alphas = [0.0, 0.5, 2.0, -3.0]
    batched = generate_steered(model, prompts, [Steering({1: v}, a) for a in alphas], GREEDY, progress=False)
    separate = [generate_steered(model, prompts, [Steering({1: v}, a)], GREEDY, progress=False).tokens[0] for a in alphas]
    assert batched.tokens == separate
    assert len({str(t) for t in separate}) > 1  # the coefficients do change the answers


def test_all_rows_stopping_early_still_returns_every_answer(micro):
    model = load_model(ModelSpec(str(micro["llama"])))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    steering = Steering({0: torch.zeros(model.d_model)}, 0.0)
    long = SamplingConfig(temperature=0.0, max_new_tokens=12, batch_size=64, seed=0)
    free = generate_steered(model, prompts, [steering], long, progress=False)
    # Make each row's second generated token an end-of-turn token: every row stops after 1 token, far before 12.
    gen_cfg = model.lm._module.generation_config
    old = gen_cfg.eos_token_id
    gen_cfg.eos_token_id = sorted({row[1] for row in free.tokens[0]} | {model.tokenizer.eos_token_id})
    try:
        stopped = generate_steered(model, prompts, [steering], long, progress=False)
    finally:
        gen_cfg.eos_token_id = old
    assert [len(t) for t in stopped.tokens[0]] == [1, 1, 1] or all(len(t) <= 1 for t in stopped.tokens[0])
    assert stopped.tokens[0] == [row[: len(s)] for row, s in zip(free.tokens[0], stopped.tokens[0])]
    assert len(stopped.answers[0]) == len(prompts)


def test_both_generation_paths_stop_on_the_generation_configs_end_of_turn(tmp_path):
    """A template whose end-of-turn differs from eos (listed only in generation_config.json): the evaluation
    sampler (plain transformers generate) and steered generation (nnsight) both stop on it, with the same ids."""
    folder = build_micro("qwen2", tmp_path / "qwen2")
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=12, batch_size=2, seed=0)
    model = load_model(ModelSpec(str(folder)))
    tok = model.tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    free = generate_answers(model, prompts, sampled, progress=False).tokens[0]  # stops on eos alone
    end_of_turn = free[0][3]  # a token the first answer draws at its 4th step
    assert end_of_turn not in (tok.eos_token_id, tok.pad_token_id) and end_of_turn not in free[0][:3]
    config = GenerationConfig.from_pretrained(folder)
    config.eos_token_id = [tok.eos_token_id, end_of_turn]
    config.save_pretrained(folder)
    expected = [row[: row.index(end_of_turn)] if end_of_turn in row else row for row in free]
    assert len(expected[0]) == 3 < len(free[0])

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    model = load_model(ModelSpec(str(folder)))
    assert stop_token_ids(hf, tok) == stop_token_ids(model.lm, tok) == sorted([tok.eos_token_id, end_of_turn])
    steered = generate_answers(model, prompts, sampled, progress=False)
    plain = sample_answer_ids(hf, tok, QUESTIONS, sampled)
    assert plain == steered.tokens[0] == expected
    assert sample_answers(hf, tok, QUESTIONS, sampled) == steered.answers[0]


def test_remote_local_steering_equals_local_token_for_token_in_few_requests(micro, remote_requests):
    """remote="local" serialises every generate (with its common-random-numbers sampling) as NDIF would; 3 batches
    with 2 traces per session make 2 requests."""
    here = load_model(ModelSpec(str(micro["qwen2"])))
    there = load_model(ModelSpec(str(micro["qwen2"]), remote="local", traces_per_session=2))
    prompts = [chat_prompt(here.tokenizer, q) for q in QUESTIONS]
    v = torch.randn(here.d_model, generator=torch.Generator().manual_seed(5)) * 3
    steerings = [Steering({0: v}, a) for a in (0.0, 1.0)]
    small = SamplingConfig(temperature=1.0, max_new_tokens=6, batch_size=2, seed=0)  # 6 rows -> 3 generate calls, sampled
    local = generate_steered(here, prompts, steerings, small, progress=False)
    assert remote_requests == []
    remote = generate_steered(there, prompts, steerings, small, progress=False)
    assert len(remote_requests) == 2
    assert remote.tokens == local.tokens
    assert local.tokens[0] != local.tokens[1]  # the steering changed the answers, so equality is not vacuous


def test_remote_local_calibration_and_coherence_scores_equal_local(micro, remote_requests):
    """The control calibration (`generation_projections`) and the coherence scores (`answer_surprise`) run through
    nnsight sessions remotely; remote="local" gives the local numbers."""
    here = load_model(ModelSpec(str(micro["llama"])))
    there = load_model(ModelSpec(str(micro["llama"]), remote="local"))
    prompts = [chat_prompt(here.tokenizer, q) for q in QUESTIONS]
    tokens = generate_steered(here, prompts, [Steering({0: torch.zeros(here.d_model)}, 0.0)], GREEDY, progress=False).tokens[0]
    units = torch.nn.functional.normalize(torch.randn(2, here.d_model, generator=torch.Generator().manual_seed(6)), dim=-1)
    local = (generation_projections(here, prompts, tokens, 1, units, 6), answer_surprise(here, prompts, tokens))
    assert remote_requests == []
    remote = (generation_projections(there, prompts, tokens, 1, units, 6), answer_surprise(there, prompts, tokens))
    assert len(remote_requests) == 2
    for a, b in zip(local, remote):
        np.testing.assert_allclose(b, a, rtol=1e-5)
    assert local[0].min() > 0 and np.isfinite(local[1]).all()


def test_scaled_direction_units():
    v = torch.tensor([3.0, 4.0])
    assert torch.equal(scaled_direction(v, "direction_norm"), v)
    torch.testing.assert_close(scaled_direction(v, "residual_norm", 10.0), torch.tensor([6.0, 8.0]))
    with pytest.raises(ValueError, match="residual norm"):
        scaled_direction(v, "residual_norm")


def test_bad_steering_inputs_fail_in_one_clear_line(micro):
    model = load_model(ModelSpec(str(micro["qwen2"])))
    prompts = [chat_prompt(model.tokenizer, "Hi")]
    with pytest.raises(ValueError, match="out of range"):
        generate_steered(model, prompts, [Steering({9: torch.ones(model.d_model)}, 1.0)], GREEDY)
    with pytest.raises(ValueError, match="size 5"):
        generate_steered(model, prompts, [Steering({0: torch.ones(5)}, 1.0)], GREEDY)
    with pytest.raises(ValueError, match="finite"):
        Steering({0: torch.tensor([float("nan")] * 4)}, 1.0)
    with pytest.raises(ValueError, match="finite"):
        Steering({0: torch.ones(4)}, float("inf"))
