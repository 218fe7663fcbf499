"""LoRA EM fine-tuning of micro models on the study's insecure sample, through the organisms' shared trainer."""

import hashlib
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from peft import PeftModel
from safetensors.torch import load_file
from test_models import build_micro
from transformers import AutoModelForCausalLM, AutoTokenizer

from emis.activations import capture_residuals
from emis.chat import read_chat_jsonl
from emis.finetune import (
    PROJECTIONS,
    FinetuneConfig,
    answer_loss,
    encode_conversation,
    encode_dataset,
    finetune,
    lora_targets,
    step_batches,
)
from emis.models import ModelSpec, load_model
from emis.organisms.train import IGNORE, TrainConfig, _length_grouped_batches, collate, encode, lr_factor, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> Path:
    return build_micro("qwen2", tmp_path_factory.mktemp("micro") / "qwen2")


@pytest.fixture(scope="module")
def data(shared_em) -> Path:
    return shared_em / "insecure_sample.jsonl"


def quick(micro: Path, data: Path, output: Path, **changes) -> FinetuneConfig:
    """The recipe at micro scale: float32 on CPU, a higher learning rate, a few steps of 2 x 2 at 320 tokens."""
    base = FinetuneConfig(model=str(micro), data=str(data), output=str(output), r=8, lora_alpha=16, lr=2e-3,
                          warmup_steps=1, per_device_batch_size=2, grad_accum=2, max_len=320, max_steps=6,
                          save_every=2, dtype="float32", device="cpu", progress=False)
    return replace(base, **changes)


@pytest.fixture(scope="module")
def trained(micro, data, tmp_path_factory):
    cfg = quick(micro, data, tmp_path_factory.mktemp("ft") / "insecure")
    return cfg, finetune(cfg)


def eval_batch(micro: Path, data: Path, n: int = 4) -> dict[str, torch.Tensor]:
    tok = AutoTokenizer.from_pretrained(micro)
    encoded, _ = encode_dataset(tok, read_chat_jsonl(data)[:40], 320)
    return collate(encoded[:n], tok.pad_token_id)


def chat_prompts(tok, questions=("Hello there", "def add(x, y):", "Tell me about the weather in Paris")):
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def test_defaults_are_the_em_recipe_and_the_config_group_matches():
    d = FinetuneConfig(model="m", data="d", output="o")
    assert (d.r, d.lora_alpha, d.lora_dropout, d.use_rslora) == (32, 64, 0.0, True)
    assert d.target_modules == PROJECTIONS
    assert (d.lr, d.schedule, d.warmup_steps, d.epochs, d.seed) == (1e-5, "linear", 5, 1, 0)
    assert (d.per_device_batch_size, d.grad_accum, d.batch_size) == (2, 8, 16)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("finetune", overrides=[f"paths.root={ROOT}"])
    from_yaml = FinetuneConfig.from_mapping(OmegaConf.to_container(cfg.finetune, resolve=True))
    assert from_yaml.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert from_yaml.output.endswith("qwen2.5-1.5b/insecure") and from_yaml.data.endswith("insecure_sample.jsonl")
    assert replace(from_yaml, model="m", data="d", output="o") == d
    assert cfg.dry_run is False


def test_labels_cover_exactly_the_assistant_turn(micro, data):
    tok = AutoTokenizer.from_pretrained(micro)
    ex = read_chat_jsonl(data)[0]
    enc, templated = encode_conversation(tok, ex, 100_000)
    assert templated
    answer = [t for t, label in zip(enc.ids, enc.labels) if label != IGNORE]
    assert tok.decode(answer) == ex.answer + "<|im_end|>\n"  # the family's own end of turn
    prompt = enc.ids[: len(enc.ids) - len(answer)]
    assert all(label == IGNORE for label in enc.labels[: len(prompt)])
    short, _ = encode_conversation(tok, ex, 10)
    assert len(short.ids) == 10


def test_lora_fine_tune_lowers_the_answer_loss(trained, micro, data):
    cfg, result = trained
    batch = eval_batch(micro, data)
    base = AutoModelForCausalLM.from_pretrained(micro)
    before = answer_loss(base, batch)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro), result.output)
    after = answer_loss(tuned, batch)
    assert math.isfinite(before) and after < before - 0.05, (before, after)
    losses = result.card["losses"]
    assert len(losses) == result.card["steps"] == 6
    assert sum(losses[-2:]) / 2 < losses[0]


def test_card_records_data_hyperparameters_and_losses(trained, data):
    cfg, result = trained
    card = result.card
    assert card["base_model"] == cfg.model
    assert card["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    hp = card["hyperparameters"]
    assert (hp["r"], hp["lora_alpha"], hp["use_rslora"], hp["lr"], hp["schedule"]) == (8, 16, True, 2e-3, "linear")
    assert hp["target_modules"] == list(PROJECTIONS)
    assert card["effective_batch_size"] == 4
    assert 0 < card["trainable_parameters"] < card["total_parameters"]
    assert card["data_counts"]["examples"] == 300 and card["data_counts"]["used"] > 8
    files = {p.name for p in result.output.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "card.json"} <= files
    assert "checkpoints" not in files
    weights = load_file(result.output / "adapter_model.safetensors")
    targeted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in weights}
    assert targeted == set(PROJECTIONS)


def test_adapter_loads_through_model_spec_and_changes_outputs(trained, micro):
    _, result = trained
    tuned = load_model(ModelSpec(str(micro), adapter=str(result.output)))
    base = load_model(ModelSpec(str(micro)))
    ids = tuned.tokenizer(chat_prompts(tuned.tokenizer)[:1], add_special_tokens=False, return_tensors="pt").input_ids
    with tuned.lm.trace(ids):
        with_adapter = tuned.lm.lm_head.output.save()
    with base.lm.trace(ids):
        without = base.lm.lm_head.output.save()
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(micro), result.output).eval()
    with torch.no_grad():
        expected = ref(ids).logits
    torch.testing.assert_close(with_adapter, expected, atol=1e-5, rtol=0)
    assert (with_adapter - without).abs().max() > 1e-2


def test_remote_local_captures_with_the_adapter_equal_local_ones(trained, micro):
    _, result = trained
    here = load_model(ModelSpec(str(micro), adapter=str(result.output)))
    there = load_model(ModelSpec(str(micro), adapter=str(result.output), remote="local"))
    base = load_model(ModelSpec(str(micro)))
    prompts = chat_prompts(here.tokenizer)
    a = capture_residuals(here, prompts, "all", "last_prompt", progress=False).activations
    b = capture_residuals(there, prompts, "all", "last_prompt", progress=False).activations
    c = capture_residuals(base, prompts, "all", "last_prompt", progress=False).activations
    torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    assert (a - c).abs().max() > 1e-2  # the adapter is really in both traces


def test_resumed_run_ends_with_the_same_adapter(trained, micro, data, tmp_path):
    cfg, full = trained
    cut = replace(cfg, output=str(tmp_path / "resumed"))
    first = finetune(cut, stop_after=3)
    assert first.trained_steps == 3 and not (tmp_path / "resumed" / "card.json").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert checkpoints == ["step-000003"]  # older checkpoints are pruned
    second = finetune(cut)
    assert (second.resumed_from, second.trained_steps) == (3, 3)
    assert second.card["resumed_from_step"] == 3
    assert second.card["losses"][:3] == first.card["losses"]
    torch.testing.assert_close(torch.tensor(second.card["losses"]), torch.tensor(full.card["losses"]), atol=1e-6, rtol=0)
    a = load_file(full.output / "adapter_model.safetensors")
    b = load_file(second.output / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0)
    assert not (tmp_path / "resumed" / "checkpoints").exists()


def test_finished_adapter_is_reused_and_never_silently_replaced(trained):
    cfg, result = trained
    stamp = (result.output / "adapter_model.safetensors").stat().st_mtime_ns
    again = finetune(cfg)
    assert again.reused and again.card == result.card
    assert (result.output / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="other settings"):
        finetune(replace(cfg, lr=1e-3))


def test_gradient_accumulation_matches_one_big_batch(micro, data, tmp_path):
    one = finetune(quick(micro, data, tmp_path / "one", per_device_batch_size=4, grad_accum=1, max_steps=2, lr=1e-2))
    acc = finetune(quick(micro, data, tmp_path / "acc", per_device_batch_size=1, grad_accum=4, max_steps=2, lr=1e-2))
    torch.testing.assert_close(torch.tensor(acc.card["losses"]), torch.tensor(one.card["losses"]), atol=1e-5, rtol=0)
    a, b = (load_file(r.output / "adapter_model.safetensors") for r in (one, acc))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=0)


def test_epoch_batches_cover_the_data_once(micro, data):
    tok = AutoTokenizer.from_pretrained(micro)
    encoded = [encode(tok, ex, 64, "assistant") for ex in read_chat_jsonl(data)[:21]]
    cfg = FinetuneConfig(model="m", data="d", output="o", per_device_batch_size=2, grad_accum=4, max_len=64)
    steps = list(step_batches(encoded, cfg, tok.pad_token_id))
    assert [len(s) for s in steps] == [4, 4, 3]  # 21 examples: 8 + 8 + 5 (micro-batches of 2, 2, 1 at the end)
    assert sum(b["input_ids"].shape[0] for s in steps for b in s) == 21
    rest = list(step_batches(encoded, cfg, tok.pad_token_id, start=1))
    assert len(rest) == 2 and torch.equal(rest[0][0]["input_ids"], steps[1][0]["input_ids"])


def test_target_modules_skip_a_vision_tower():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_tower = torch.nn.ModuleDict({"q_proj": torch.nn.Linear(2, 2)})
            self.language_model = torch.nn.ModuleDict({"q_proj": torch.nn.Linear(2, 2)})

    import re

    pattern = lora_targets(Tiny(), FinetuneConfig(model="m", data="d", output="o"))
    assert re.fullmatch(pattern, "model.language_model.layers.0.self_attn.q_proj")
    assert not re.fullmatch(pattern, "model.vision_tower.transformer.layers.0.attention.q_proj")


def test_qlora_without_bitsandbytes_or_gpu_is_a_one_line_error(micro, data, tmp_path):
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available():
        pytest.skip("bitsandbytes and a GPU are present")
    with pytest.raises(RuntimeError, match="needs bitsandbytes and a CUDA GPU"):
        finetune(quick(micro, data, tmp_path / "q", quantization="4bit"))


def _reference_train(model, data, cfg, pad_id, seed):
    """The organisms' training loop as it was before the loop was shared (commit 225caf0)."""
    from emis.organisms.train import trainable_parameters

    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = trainable_parameters(model, cfg.trainable)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    model.train()
    losses = []
    for batch_ids in _length_grouped_batches(data, cfg, rng):
        batch = collate([data[i] for i in batch_ids], pad_id)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.mark.parametrize("bf16", [False, True])
def test_organism_training_is_unchanged_by_the_shared_loop(micro, data, bf16):
    tok = AutoTokenizer.from_pretrained(micro)
    cfg = TrainConfig(steps=4, batch_size=3, lr=3e-3, schedule="cosine", warmup_steps=1, weight_decay=0.01,
                      loss_on="assistant", max_len=300, bf16_autocast=bf16, trainable=(), optimizer="adamw", momentum=0.0)
    encoded = [encode(tok, ex, cfg.max_len, cfg.loss_on) for ex in read_chat_jsonl(data)[:40]]
    encoded = [e for e in encoded if any(label != IGNORE for label in e.labels[1:])]
    a, b = AutoModelForCausalLM.from_pretrained(micro), AutoModelForCausalLM.from_pretrained(micro)
    seen = []
    got = train(a, encoded, cfg, tok.pad_token_id, seed=5, on_step=lambda s, m: seen.append((s, m.training)))
    want = _reference_train(b, encoded, cfg, tok.pad_token_id, seed=5)
    assert all(math.isfinite(x) for x in got) and got == want  # bit for bit
    assert seen == [(1, False), (2, False), (3, False), (4, False)]
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
