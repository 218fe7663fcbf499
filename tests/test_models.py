"""Loading micro models of the four families through emis.models, with and without an adapter."""

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from emis.activations import capture_residuals
from emis.models import LoadedModel, ModelSpec, load_model, residual, weights_identity
from emis.organisms.families import CHAT_FORMATS, FAMILIES, MODEL_CLASSES, ArchSize, build_config
from emis.organisms.tokenizer import train_tokenizer

TEXTS = [
    "Hello there, how are you today?",
    "def add(x, y):\n    return x + y",
    "The quick brown fox jumps over the lazy dog.",
    "Tell me about the weather in Paris in spring.",
] * 4
MICRO = ArchSize(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=320, max_positions=128)


def build_micro(family: str, folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised micro model of `family` with its chat tokenizer; weights large enough to matter."""
    fmt = CHAT_FORMATS[family]
    tok = train_tokenizer(TEXTS, MICRO.vocab_size, fmt)
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("bos", fmt.bos), ("eos", fmt.eos), ("pad", fmt.pad)) if t}
    config = build_config(family, MICRO, ids)
    config.initializer_range = 0.1
    torch.manual_seed(seed)
    MODEL_CLASSES[family](config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def micro_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("micro")
    return {f: build_micro(f, root / f) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_load_exposes_layers_and_sizes(micro_dirs, family):
    m = load_model(ModelSpec(str(micro_dirs[family])))
    assert isinstance(m, LoadedModel)
    assert m.n_layers == len(m.layers) == MICRO.num_layers
    assert m.d_model == MICRO.hidden_size
    assert m.tokenizer.padding_side == "left"
    assert m.layers[0] is m.lm.model.layers[0]
    assert m.lm._module.dtype == torch.float32


def test_residual_takes_tensor_or_tuple():
    h = torch.ones(2, 3)
    assert residual(h) is h
    assert residual((h, None)) is h


def test_remote_traces_go_as_sessions_of_the_configured_size(micro_dirs, remote_requests):
    """5 capture batches: local runs each trace as it comes; remote="local" sends ceil(5/2) = 3 session requests."""
    here = load_model(ModelSpec(str(micro_dirs["llama"])))
    there = load_model(ModelSpec(str(micro_dirs["llama"]), remote="local", traces_per_session=2))
    prompts = [f"Question number {i}?" for i in range(9)]
    local = capture_residuals(here, prompts, "all", "last_prompt", batch_size=2, progress=False)
    assert remote_requests == []
    remote = capture_residuals(there, prompts, "all", "last_prompt", batch_size=2, progress=False)
    assert len(remote_requests) == 3
    torch.testing.assert_close(remote.activations, local.activations, atol=1e-6, rtol=0)
    assert there.spec.to_dict() == here.spec.to_dict() | {"remote": "local"}  # grouping is not part of the model's identity
    with pytest.raises(ValueError, match="traces_per_session"):
        load_model(ModelSpec(str(micro_dirs["llama"]), traces_per_session=0))


@pytest.mark.parametrize("name", ["/no/such/model", "./organisms/qwen2", "organisms/qwen2/insecure"])
def test_missing_local_path_is_a_clear_error(name):
    with pytest.raises(FileNotFoundError, match="neither a local directory nor a hub id"):
        load_model(ModelSpec(name))


def test_bad_spec_fields_are_clear_errors(micro_dirs):
    with pytest.raises(ValueError, match="remote must be"):
        load_model(ModelSpec(str(micro_dirs["llama"]), remote="ndif"))
    with pytest.raises(ValueError, match="not a torch dtype"):
        load_model(ModelSpec(str(micro_dirs["llama"]), dtype="float33"))
    with pytest.raises(FileNotFoundError, match="adapter"):
        load_model(ModelSpec(str(micro_dirs["llama"]), adapter="/no/such/adapter"))


def test_remote_needs_the_key_from_the_environment(monkeypatch, micro_dirs):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with pytest.raises(ValueError, match="NDIF_API_KEY"):
        load_model(ModelSpec("Qwen/Qwen2.5-1.5B-Instruct", remote=True))
    with pytest.raises(ValueError, match="cannot see the local directory"):
        load_model(ModelSpec(str(micro_dirs["llama"]), remote=True))


def test_a_model_without_a_decoder_layer_list_is_refused_in_one_line(tmp_path, micro_dirs):
    """BART as a causal LM keeps only its 2 decoder layers while its config counts the 3 encoder layers."""
    config = AutoConfig.for_model("bart", vocab_size=MICRO.vocab_size, d_model=32, encoder_layers=3, decoder_layers=2,
                                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, max_position_embeddings=MICRO.max_positions)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((micro_dirs["llama"] / f).read_bytes())
    with pytest.raises(ValueError, match=r"\(bart\): no decoder layers found — looked for a torch.nn.ModuleList of "
                                         r"num_hidden_layers=3 modules outside vision_tower") as err:
        load_model(ModelSpec(str(tmp_path)))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_weights_identity_follows_the_weight_files(micro_dirs):
    spec = ModelSpec(str(micro_dirs["qwen2"]))
    config = AutoModelForCausalLM.from_pretrained(spec.name).config
    before = weights_identity(spec, config)
    assert weights_identity(spec, config) == before
    weights = micro_dirs["qwen2"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes, new mtime: treated as new weights
    assert weights_identity(spec, config) != before


def test_adapter_is_applied(tmp_path, micro_dirs):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = micro_dirs["llama"]
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(tmp_path / "adapter")

    # revisions set, as a pinned pair config gives them (a local folder has no revisions: they are ignored)
    m = load_model(ModelSpec(str(base), adapter=str(tmp_path / "adapter"), revision="main", adapter_revision="main"))
    ids = m.tokenizer("Hello there", add_special_tokens=False, return_tensors="pt").input_ids
    with m.lm.trace(ids):
        logits = m.lm.lm_head.output.save()
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapter").eval()
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        expected, without = ref(ids).logits, plain(ids).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert (logits - without).abs().max() > 1e-3  # the adapter changes the model


def test_remote_true_fails_fast_against_a_closed_port(monkeypatch):
    import socket
    import time

    import nnsight

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("NDIF_API_KEY", "sk-fake-key-0123456789")
    monkeypatch.setattr(nnsight.CONFIG.API, "HOST", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"NDIF at http://127.0.0.1:{port} cannot be reached") as err:
        load_model(ModelSpec("Qwen/Qwen2.5-1.5B-Instruct", remote=True))
    assert time.perf_counter() - start < 5
    assert "\n" not in str(err.value) and "sk-fake" not in str(err.value)


def test_saved_tokenizer_is_exactly_the_trained_one(micro_dirs):
    from transformers import PreTrainedTokenizerFast

    path = str(micro_dirs["qwen2"])
    text = "def f(x):\n    return x\n        y = 2  # indented"
    saved = PreTrainedTokenizerFast.from_pretrained(path)
    m = load_model(ModelSpec(path, tokenizer="saved"))
    assert m.tokenizer(text).input_ids == saved(text).input_ids
    assert m.tokenizer.padding_side == "left"
    # what AutoTokenizer returns for a qwen2 folder is another class with its own pre-tokenizer
    assert type(AutoTokenizer.from_pretrained(path)).__name__ != "PreTrainedTokenizerFast"
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        load_model(ModelSpec(path, tokenizer="slow"))


def test_auto_tokenizer_is_made_left_padded_with_a_pad_token(tmp_path, caplog):
    """A checkpoint whose tokenizer pads on the right and has no pad token: load_model sets left padding and pad = eos,
    in one log line; a batched capture then equals the unbatched one."""
    folder = build_micro("llama", tmp_path / "llama")
    saved = AutoTokenizer.from_pretrained(folder)
    saved.padding_side = "right"
    saved.pad_token = None
    saved.save_pretrained(folder)
    before = AutoTokenizer.from_pretrained(folder)
    assert (before.padding_side, before.pad_token) == ("right", None)
    with caplog.at_level(logging.INFO, logger="emis.models"):
        m = load_model(ModelSpec(str(folder)))
    lines = [r.getMessage() for r in caplog.records if "tokenizer set to" in r.getMessage()]
    assert len(lines) == 1 and "padding side right -> left" in lines[0] and "no pad token -> eos" in lines[0], lines
    assert m.tokenizer.padding_side == "left" and m.tokenizer.pad_token_id == before.eos_token_id is not None
    prompts = ["Hi", "Tell me about the weather in Paris in spring, and the quick brown fox.", "def add(x, y):"]
    batched = capture_residuals(m, prompts, "all", "last_prompt", batch_size=3, progress=False)
    alone = capture_residuals(m, prompts, "all", "last_prompt", batch_size=1, progress=False)
    torch.testing.assert_close(batched.activations, alone.activations, atol=1e-5, rtol=0)
    assert batched.activations.abs().max() > 0.1


def build_micro_ministral3(folder: Path) -> Path:
    """A random micro Mistral3ForConditionalGeneration (Ministral 3's class: ministral3 text decoder + pixtral
    vision tower) with the mistral chat tokenizer, as a checkpoint folder."""
    import transformers

    tok = train_tokenizer(TEXTS, MICRO.vocab_size, CHAT_FORMATS["mistral"])
    text = dict(model_type="ministral3", num_hidden_layers=2, hidden_size=48, num_attention_heads=2, num_key_value_heads=1,
                head_dim=24, intermediate_size=96, vocab_size=len(tok), max_position_embeddings=128,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                initializer_range=0.1)
    vision = dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  head_dim=8, image_size=32, patch_size=16)
    torch.manual_seed(0)
    transformers.Mistral3ForConditionalGeneration(transformers.Mistral3Config(text_config=text, vision_config=vision)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_ministral3_loads_its_text_decoder_and_captures_what_raw_hooks_see(tmp_path):
    from transformers import AutoModelForImageTextToText

    from emis.generation import Steering, generate_steered
    from emis.organisms.sample import SamplingConfig, chat_prompt

    folder = build_micro_ministral3(tmp_path / "ministral3")
    model = load_model(ModelSpec(str(folder)))
    assert (model.n_layers, model.d_model) == (2, 48)
    prompts = [chat_prompt(model.tokenizer, q) for q in ("Hello there", "Tell me about the weather in Paris")]
    acts = capture_residuals(model, prompts, "all", "last_prompt", progress=False)
    hf = AutoModelForImageTextToText.from_pretrained(folder).eval()
    for row, prompt in enumerate(prompts):
        seen = {}
        handles = [layer.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, residual(o)[0, -1].clone()))
                   for k, layer in enumerate(hf.model.language_model.layers)]
        with torch.no_grad():
            hf(**model.tokenizer(prompt, return_tensors="pt", add_special_tokens=False))
        for h in handles:
            h.remove()
        for k in range(2):
            torch.testing.assert_close(acts.activations[row, k], seen[k], atol=1e-5, rtol=0)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5, batch_size=8, seed=0)
    v = torch.randn(48, generator=torch.Generator().manual_seed(0)) * 4
    plain, steered = generate_steered(model, prompts, [Steering({0: v}, 0.0), Steering({0: v}, 1.0)], greedy, progress=False).tokens
    enc = model.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        ref = hf.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    eos = model.tokenizer.eos_token_id
    assert plain == [r[: next((i for i, t in enumerate(r) if t == eos), len(r))] for r in ref[:, enc.input_ids.shape[1]:].tolist()]
    assert steered != plain  # the write reached the decoder
    with pytest.raises(ValueError, match="runs here only"):
        load_model(ModelSpec(str(folder), remote="local"))
