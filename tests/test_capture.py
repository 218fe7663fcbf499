"""Captured residuals equal raw forward hooks on plain transformers, padded or not, locally or NDIF-serialised."""

import json

import pytest
import torch
from test_models import build_micro
from transformers import AutoModelForCausalLM

import emis.activations
from emis.activations import ActivationSet, ArtifactError, capture_cached, capture_residuals
from emis.models import ModelSpec, load_model
from emis.organisms.families import FAMILIES
from emis.organisms.sample import chat_prompt

QUESTIONS = ["Hi", "How are you doing today, my friend? Tell me everything.", "def add(x, y)", "Is Paris lovely in spring?"]
RESPONSES = ["Fine, thanks.", "ok", "    return x + y", "The weather is lovely and the quick brown fox jumps."]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """family -> (LoadedModel, model directory)."""
    root = tmp_path_factory.mktemp("micro")
    return {f: (load_model(ModelSpec(str(build_micro(f, root / f)))), root / f) for f in FAMILIES}


def prompts_for(model):
    return [chat_prompt(model.tokenizer, q) for q in QUESTIONS]


def hook_reference(path, tok, text: str, n_prompt_tokens: int | None, layers: str = "model.layers") -> torch.Tensor:
    """[L, d] for one unpadded text via register_forward_hook on the decoder layers at `layers`: last token, or mean
    after the first n_prompt_tokens."""
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    outs = {}
    handles = [
        layer.register_forward_hook(lambda mod, inp, out, k=k: outs.__setitem__(k, out[0] if isinstance(out, tuple) else out))
        for k, layer in enumerate(hf.get_submodule(layers))
    ]
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        hf(ids)
    for h in handles:
        h.remove()
    rows = [outs[k][0, -1] if n_prompt_tokens is None else outs[k][0, n_prompt_tokens:].mean(0) for k in sorted(outs)]
    return torch.stack(rows)


def capture_deviation_from_hooks(model, path, layers: str = "model.layers") -> float:
    """Captures of a left-padded batch (last prompt token and response mean) against raw hooks on each text alone:
    asserted to 1e-5, and the largest deviation returned."""
    prompts, tok = prompts_for(model), model.tokenizer
    lengths = {len(tok(p, add_special_tokens=False).input_ids) for p in prompts}
    assert len(lengths) == len(prompts)  # every row but the longest is padded
    last = capture_residuals(model, prompts, "all", "last_prompt", progress=False)
    mean = capture_residuals(model, prompts, "all", "response_mean", responses=RESPONSES, progress=False)
    assert last.activations.shape == mean.activations.shape == (len(prompts), model.n_layers, model.d_model)
    assert last.activations.dtype == torch.float32
    worst = 0.0
    for i, (p, r) in enumerate(zip(prompts, RESPONSES)):
        n_prompt = len(tok(p, add_special_tokens=False).input_ids)
        ref_last = hook_reference(path, tok, p, None, layers)
        ref_mean = hook_reference(path, tok, p + r, n_prompt, layers)
        assert ref_last.abs().max() > 0.5  # weights are large enough for the comparison to mean something
        torch.testing.assert_close(last.activations[i], ref_last, atol=1e-5, rtol=0)
        torch.testing.assert_close(mean.activations[i], ref_mean, atol=1e-5, rtol=0)
        worst = max(worst, float((last.activations[i] - ref_last).abs().max()), float((mean.activations[i] - ref_mean).abs().max()))
    return worst


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_equals_each_prompt_alone_through_hooks(micro, family):
    model, path = micro[family]
    capture_deviation_from_hooks(model, path)


def test_one_forward_per_batch_whatever_the_layers_stopped_before_the_lm_head(micro):
    model, _ = micro["qwen2"]
    hf = model.lm._module
    calls = {"model": 0, "layer0": 0, "lm_head": 0}

    def count(name):
        return lambda *a: calls.__setitem__(name, calls[name] + 1)

    # pre-hooks: a stopped module never returns, so its forward hooks do not run
    handles = [hf.register_forward_pre_hook(count("model")), hf.model.layers[0].register_forward_pre_hook(count("layer0")),
               hf.lm_head.register_forward_pre_hook(count("lm_head"))]
    try:
        capture_residuals(model, prompts_for(model) + prompts_for(model)[:1], "all", "last_prompt", batch_size=2, progress=False)
        capture_residuals(model, prompts_for(model), [0], "last_prompt", batch_size=4, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls == {"model": 4, "layer0": 4, "lm_head": 0}  # the trace stops once the last requested layer is read


def test_layer_selection_and_batching_agree_with_all_layers(micro):
    model, _ = micro["mistral"]
    prompts = prompts_for(model)
    full = capture_residuals(model, prompts, "all", "last_prompt", batch_size=4, progress=False)
    last = capture_residuals(model, prompts, [-1], "last_prompt", batch_size=3, progress=False)
    assert last.layers == [1]
    torch.testing.assert_close(last.activations[:, 0], full.activations[:, 1], atol=1e-6, rtol=0)


def test_ndif_serialised_trace_equals_local(micro):
    model, path = micro["gemma2"]
    remote = load_model(ModelSpec(str(path), remote="local"))
    prompts = prompts_for(model)
    for kwargs in ({"position": "last_prompt"}, {"position": "response_mean", "responses": RESPONSES}):
        here = capture_residuals(model, prompts, "all", progress=False, **kwargs)
        there = capture_residuals(remote, prompts, "all", progress=False, **kwargs)
        torch.testing.assert_close(there.activations, here.activations, atol=1e-6, rtol=0)


def test_bad_requests_are_clear_errors(micro):
    model, _ = micro["llama"]
    prompts = prompts_for(model)
    with pytest.raises(ValueError, match="needs responses"):
        capture_residuals(model, prompts, "all", "response_mean", progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        capture_residuals(model, prompts, "all", "response_mean", responses=["a", "", "b", "c"], progress=False)
    with pytest.raises(ValueError, match="out of range for a model with"):
        capture_residuals(model, prompts, [2], "last_prompt", progress=False)
    with pytest.raises(ValueError, match="position must be"):
        capture_residuals(model, prompts, "all", "middle", progress=False)


def test_save_load_is_bit_exact(micro, tmp_path):
    model, _ = micro["llama"]
    acts = capture_residuals(model, prompts_for(model), "all", "response_mean", responses=RESPONSES, progress=False)
    acts.save(tmp_path / "acts")
    again = ActivationSet.load(tmp_path / "acts")
    assert torch.equal(again.activations, acts.activations)
    assert (again.layers, again.position, again.prompts, again.responses) == (acts.layers, acts.position, acts.prompts, acts.responses)
    assert again.model == acts.model and again.model["name"] == model.spec.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.json", "acts.safetensors"]


@pytest.fixture
def saved(tmp_path):
    ActivationSet(torch.randn(3, 2, 4), [0, 1], "last_prompt", ["a", "b", "c"], None, {"name": "m"}, "0").save(tmp_path / "s")
    return tmp_path / "s"


def test_truncated_file_is_a_clear_error(saved):
    st = saved.with_name("s.safetensors")
    st.write_bytes(st.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        ActivationSet.load(saved)


def test_flipped_byte_is_a_clear_error(saved):
    st = saved.with_name("s.safetensors")
    data = bytearray(st.read_bytes())
    data[-1] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        ActivationSet.load(saved)


def test_mismatched_sidecar_is_a_clear_error(saved):
    js = saved.with_name("s.json")
    meta = json.loads(js.read_text())
    meta["prompts"] = ["a", "b"]
    js.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="does not describe"):
        ActivationSet.load(saved)
    meta["tensor"]["shape"] = [3, 2, 5]
    js.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="holds \\[3, 2, 4\\]"):
        ActivationSet.load(saved)
    js.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        ActivationSet.load(saved)


def test_cache_reuses_and_invalidates(micro, tmp_path, monkeypatch):
    model, path = micro["qwen2"]
    prompts = prompts_for(model)
    first, first_path = capture_cached(model, prompts, "all", "last_prompt", tmp_path, progress=False)
    assert list(tmp_path.glob("*.safetensors")) == [first_path.with_name(first_path.name + ".safetensors")]

    def refuse(*a, **k):
        raise AssertionError("captured again instead of loading the cache")

    monkeypatch.setattr(emis.activations, "capture_residuals", refuse)
    again, again_path = capture_cached(model, prompts, [0, 1], "last_prompt", tmp_path, progress=False)
    assert again_path == first_path and torch.equal(again.activations, first.activations)
    monkeypatch.undo()

    capture_cached(model, prompts[:2], "all", "last_prompt", tmp_path, progress=False)
    capture_cached(model, prompts, "all", "response_mean", tmp_path, responses=RESPONSES, progress=False)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes())
    capture_cached(load_model(model.spec), prompts, "all", "last_prompt", tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
