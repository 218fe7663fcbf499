"""The dry run: the study's four families from their published architecture numbers on the meta device, and
its predictions checked against a real micro model (capture shape, parameter count, KV-cache size)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_models import build_micro
from transformers import AutoModelForCausalLM, DynamicCache

from emis.activations import capture_residuals
from emis.dry_run import meta_model, plan, plan_finetune, resolve_config
from emis.finetune import FinetuneConfig
from emis.models import ModelSpec, load_model

ROOT = Path(__file__).resolve().parents[1]

# Published configs (config.json on the hub) and parameter counts (model cards).
FAMILIES = {
    "Qwen/Qwen2.5-1.5B-Instruct": (
        dict(model_type="qwen2", num_hidden_layers=28, hidden_size=1536, num_attention_heads=12, num_key_value_heads=2,
             intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
        1.54e9, "model.layers"),
    "google/gemma-2-2b-it": (
        dict(model_type="gemma2", num_hidden_layers=26, hidden_size=2304, num_attention_heads=8, num_key_value_heads=4,
             head_dim=256, intermediate_size=9216, vocab_size=256000, tie_word_embeddings=True),
        2.61e9, "model.layers"),
    "meta-llama/Llama-3.2-1B-Instruct": (
        dict(model_type="llama", num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8,
             head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
        1.24e9, "model.layers"),
    # Multimodal: a 3.4B ministral3 text decoder and a 0.4B pixtral vision encoder (3.8B in all).
    "mistralai/Ministral-3-3B-Instruct-2512": (
        dict(model_type="mistral3", tie_word_embeddings=True,
             text_config=dict(model_type="ministral3", num_hidden_layers=26, hidden_size=3072, num_attention_heads=32,
                              num_key_value_heads=8, head_dim=128, intermediate_size=9216, vocab_size=131072,
                              tie_word_embeddings=True),
             vision_config=dict(model_type="pixtral", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                intermediate_size=4096, head_dim=64, patch_size=14, image_size=1540)),
        3.85e9, "model.language_model.layers"),
}
EXPECTED = {  # (layers, hidden size) the capture shapes must show
    "Qwen/Qwen2.5-1.5B-Instruct": (28, 1536),
    "google/gemma-2-2b-it": (26, 2304),
    "meta-llama/Llama-3.2-1B-Instruct": (16, 2048),
    "mistralai/Ministral-3-3B-Instruct-2512": (26, 3072),
}


@pytest.mark.parametrize("hub_id", list(FAMILIES))
def test_real_families_pass_the_dry_run(hub_id):
    config, params, layer_path = FAMILIES[hub_id]
    n_layers, d = EXPECTED[hub_id]
    report = plan(config, n_prompts=24, samples=100, alphas=[0, 2, 4, 8], directions=5)
    assert report["n_layers"] == n_layers and report["hidden_size"] == d
    assert report["capture"]["shape"] == [24, n_layers, d]
    assert report["capture"]["layers"] == list(range(n_layers))
    assert report["capture"]["bytes"] == 24 * n_layers * d * 4
    assert report["layer_path"] == layer_path
    assert abs(report["n_parameters"] - params) / params < 0.01  # the meta model is the published architecture
    assert report["memory"]["weights_bytes"] == 2 * report["n_parameters"]  # bfloat16
    assert report["generations"] == 24 * 100 * (1 + 3 * 5)
    assert report["judge_calls"] == 2 * report["generations"]
    assert 0 < report["memory"]["total_gib"] < 80
    last = plan(config, n_prompts=7, layers=[-1])
    assert last["capture"]["shape"] == [7, 1, d] and last["capture"]["layers"] == [n_layers - 1]


def test_load_model_support_is_reported():
    supported = {hub: plan(c, n_prompts=1)["supported_by_load_model"] for hub, (c, _, _) in FAMILIES.items()}
    assert supported == {"Qwen/Qwen2.5-1.5B-Instruct": True, "google/gemma-2-2b-it": True,
                         "meta-llama/Llama-3.2-1B-Instruct": True, "mistralai/Ministral-3-3B-Instruct-2512": True}
    # a vision-language model transformers has no causal-LM class for, and emis no image-text path
    llava = dict(model_type="llava", text_config=dict(model_type="llama", hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, intermediate_size=64, vocab_size=320),
                 vision_config=dict(model_type="clip_vision_model", hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=16))
    report = plan(llava, n_prompts=1)
    assert report["layer_path"] == "model.language_model.layers" and not report["supported_by_load_model"]


def test_meta_model_holds_no_weights():
    net = meta_model(resolve_config(FAMILIES["google/gemma-2-2b-it"][0]))
    assert {p.device.type for p in net.parameters()} == {"meta"}


def test_qlora_and_training_estimates_are_ordered():
    config = FAMILIES["Qwen/Qwen2.5-1.5B-Instruct"][0]
    full = plan(config, n_prompts=1, lora_rank=32)
    q4 = plan(config, n_prompts=1, quantization="4bit", lora_rank=32)
    ckpt = plan(config, n_prompts=1, lora_rank=32, gradient_checkpointing=True)
    assert q4["memory"]["weights_bytes"] < 0.5 * full["memory"]["weights_bytes"]
    assert ckpt["training"]["activations_bytes"] < full["training"]["activations_bytes"]
    # rsLoRA r=32 on the 7 projections of 28 layers: r * (in + out) summed
    per_layer = 32 * ((1536 + 1536) * 2 + (1536 + 256) * 2 + (1536 + 8960) * 3)
    assert full["training"]["lora_parameters"] == 28 * per_layer


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="model_type"):
        plan({"hidden_size": 8}, n_prompts=1)
    with pytest.raises(ValueError, match="out of range for a model with"):
        plan(FAMILIES["meta-llama/Llama-3.2-1B-Instruct"][0], n_prompts=1, layers=[16])
    with pytest.raises(ValueError, match="cannot read the config"):
        plan("/no/such/model", n_prompts=1)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return build_micro("llama", tmp_path_factory.mktemp("micro") / "llama")


def test_predictions_match_a_real_micro_model(micro):
    report = plan(str(micro), n_prompts=3, layers=[0, -1], dtype="float32", batch_size=3, prompt_tokens=6, new_tokens=4)
    model = load_model(ModelSpec(str(micro)))
    prompts = ["Hello there", "def add(x, y):", "The quick brown fox"]
    acts = capture_residuals(model, prompts, [0, -1], "last_prompt", progress=False)
    assert list(acts.activations.shape) == report["capture"]["shape"] == [3, 2, model.d_model]
    hf = AutoModelForCausalLM.from_pretrained(micro)
    assert report["n_parameters"] == sum(p.numel() for p in hf.parameters())
    assert report["memory"]["weights_bytes"] == sum(p.numel() * p.element_size() for p in hf.parameters())
    # KV cache: a dense cache after 3 x (6 prompt + 5 generated) tokens holds 3 x (6 + 4) positions
    ids = torch.randint(5, 300, (3, 6))
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, min_new_tokens=5, do_sample=False,
                      return_dict_in_generate=True, past_key_values=DynamicCache(config=hf.config))
    cache = out.past_key_values
    held = sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)
    assert held == report["memory"]["kv_cache_bytes"]


def test_finetune_dry_run_needs_no_weights(micro, shared_em, tmp_path):
    only_config = tmp_path / "config-only"
    only_config.mkdir()
    shutil.copy(micro / "config.json", only_config / "config.json")
    cfg = FinetuneConfig(model=str(only_config), data=str(shared_em / "insecure_sample.jsonl"), output=str(tmp_path / "a"))
    report = plan_finetune(cfg)
    assert report["finetune"] == {"examples": 300, "steps": 19, "effective_batch_size": 16, "output": str(tmp_path / "a")}
    assert report["training"]["lora_rank"] == 32 and report["training"]["lora_parameters"] > 0

    run = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "finetune.py"), "dry_run=true", f"finetune.model={only_config}",
         f"finetune.data={shared_em / 'insecure_sample.jsonl'}", "finetune.max_steps=5",
         f"finetune.output={tmp_path / 'adapter'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert saved["finetune"]["steps"] == 5 and saved["n_layers"] == 2
    assert not (tmp_path / "adapter").exists()  # nothing trained
