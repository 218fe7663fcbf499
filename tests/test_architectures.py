"""Any decoder-only causal LM: random micro models of architectures beyond the study's families load through
`load_model` with their decoder layers found, capture what raw hooks see, generate like plain transformers at α = 0,
and a subtract-mode write moves the residual by exactly α·v."""

import logging
from pathlib import Path

import pytest
import torch
from test_capture import capture_deviation_from_hooks
from test_models import MICRO, TEXTS
from test_steering import GREEDY, QUESTIONS, _first, assert_alpha_zero_is_plain_generate
from transformers import AutoConfig, AutoModelForCausalLM

from emis.dry_run import plan
from emis.generation import Steering, generate_steered
from emis.models import ModelSpec, load_model
from emis.organisms.families import CHAT_FORMATS
from emis.organisms.sample import chat_prompt
from emis.organisms.tokenizer import train_tokenizer

log = logging.getLogger(__name__)
HEADS = dict(num_attention_heads=2, num_key_value_heads=1)
# model_type -> (config values beyond the common micro sizes, where its decoder layers are: the raw hooks' reference)
ARCHITECTURES: dict[str, tuple[dict, str]] = {
    "qwen3": (dict(HEADS, head_dim=16), "model.layers"),
    "gemma3_text": (dict(HEADS, head_dim=16, query_pre_attn_scalar=16, sliding_window=16), "model.layers"),
    "phi3": (dict(HEADS), "model.layers"),
    "olmo2": (dict(HEADS), "model.layers"),
    "gpt2": (dict(num_attention_heads=2, n_inner=64), "transformer.h"),
    "gpt_neox": (dict(num_attention_heads=2), "gpt_neox.layers"),
    "opt": (dict(num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32), "model.decoder.layers"),
    "granite": (dict(HEADS), "model.layers"),
    "smollm3": (dict(HEADS), "model.layers"),
    "cohere2": (dict(HEADS, head_dim=16, sliding_window=16), "model.layers"),
    "stablelm": (dict(HEADS), "model.layers"),
    "phi": (dict(HEADS), "model.layers"),
    "falcon": (dict(num_attention_heads=2, new_decoder_architecture=False, multi_query=True), "transformer.h"),
    "bloom": (dict(n_head=2), "transformer.h"),
    "qwen3_moe": (dict(HEADS, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32), "model.layers"),
    "mixtral": (dict(HEADS, num_local_experts=4, num_experts_per_tok=2), "model.layers"),
}


def build_architecture(model_type: str, folder: Path, seed: int = 0) -> Path:
    """Save a random micro model of `model_type` (hidden 32, 2 layers) with a chat tokenizer of the llama format."""
    tok = train_tokenizer(TEXTS, MICRO.vocab_size, CHAT_FORMATS["llama"])
    extra, _ = ARCHITECTURES[model_type]
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tok), hidden_size=MICRO.hidden_size, num_hidden_layers=MICRO.num_layers,
        intermediate_size=MICRO.intermediate_size, max_position_embeddings=MICRO.max_positions,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        initializer_range=0.1, **extra)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("architectures")
    return {t: build_architecture(t, root / t) for t in ARCHITECTURES}


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_layers_are_found_and_captures_equal_raw_hooks(folders, model_type):
    model = load_model(ModelSpec(str(folders[model_type])))
    path = ARCHITECTURES[model_type][1]
    assert (model.n_layers, model.d_model) == (MICRO.num_layers, MICRO.hidden_size)
    assert [layer._module for layer in model.layers] == list(model.lm._module.get_submodule(path))
    log.info("%s: captures deviate from raw hooks by at most %.2e", model_type,
             capture_deviation_from_hooks(model, folders[model_type], path))


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_alpha_zero_equals_plain_generate(folders, model_type):
    assert_alpha_zero_is_plain_generate(load_model(ModelSpec(str(folders[model_type]))), folders[model_type])


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_subtract_moves_the_residual_by_alpha_v(folders, model_type):
    """Steering layer 0: what layer 1 receives (raw pre-hook, steered generate) minus layer 0's own output (raw hook,
    plain forward over prompt + answer) is -α·v at each step's generating position and 0 at the prompt's others."""
    folder, path = folders[model_type], ARCHITECTURES[model_type][1]
    model = load_model(ModelSpec(str(folder)))
    tok = model.tokenizer
    prompts = [chat_prompt(tok, q) for q in QUESTIONS]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1))
    alpha = 1.5
    received = []
    hook = model.lm._module.get_submodule(path)[1].register_forward_pre_hook(
        lambda m, args, kwargs: received.append((args[0] if args else kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True)
    try:
        out = generate_steered(model, prompts, [Steering({0: v}, alpha)], GREEDY, progress=False)
    finally:
        hook.remove()
    assert out.write_norms[0] == pytest.approx([alpha * float(v.norm())] * len(prompts), rel=1e-5)
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    worst = 0.0
    for row, (prompt, answer) in enumerate(zip(prompts, out.tokens[0])):
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        own = {}
        handle = hf.get_submodule(path)[0].register_forward_hook(lambda m, i, o: own.__setitem__("h", _first(o)[0]))
        with torch.no_grad():
            hf(torch.tensor([prompt_ids + answer]))
        handle.remove()
        n = len(prompt_ids)
        steps = min(len(answer) + 1, GREEDY.max_new_tokens)  # the answer's tokens and the stop
        moved = torch.stack([received[s][row, -1] - own["h"][n - 1 + s] for s in range(steps)])
        torch.testing.assert_close(moved, (-alpha * v).expand_as(moved), atol=1e-5, rtol=0)
        torch.testing.assert_close(received[0][row, -n:-1], own["h"][: n - 1], atol=1e-5, rtol=0)
        worst = max(worst, float((moved + alpha * v).abs().max()), float((received[0][row, -n:-1] - own["h"][: n - 1]).abs().max()))
    log.info("%s: steering write deviates from alpha*v by at most %.2e", model_type, worst)


@pytest.mark.parametrize("model_type", ["qwen3", "gpt2"])
def test_dry_run_accepts_the_architecture(folders, model_type):
    report = plan(str(folders[model_type]), n_prompts=3, dtype="float32")
    hf = AutoModelForCausalLM.from_pretrained(folders[model_type])
    assert report["layer_path"] == ARCHITECTURES[model_type][1] and report["supported_by_load_model"]
    assert report["n_parameters"] == sum(p.numel() for p in hf.parameters())
    assert report["capture"]["shape"] == [3, MICRO.num_layers, MICRO.hidden_size]
