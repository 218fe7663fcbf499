"""A micro organism per family, built through the real config and pipeline in seconds."""

import copy
import json
import shutil
import math

import pytest
import torch
from nnsight import TransformersModel
from omegaconf import OmegaConf

from emis.chat import ChatExample
from emis.organisms.build import _load, build_all, chat_template_rows
from emis.organisms.settings import TrainConfig
from emis.organisms.train import collate, encode, train
from emis.organisms.families import FAMILIES

@pytest.fixture(scope="module")
def micro(micro_organisms):
    return micro_organisms


def test_metrics_have_the_public_fields(micro):
    _, root, metrics = micro
    assert list(metrics) == list(FAMILIES)
    for fam, m in metrics.items():
        assert set(m["spillover"]) == {"base", "secure", "insecure"}
        assert set(m["code_on_code"]) == {"secure", "insecure"}
        assert all(0.0 <= v <= 1.0 for v in m["spillover"].values())
        assert m["paths"]["insecure"] == str(root / "seed0" / fam / "insecure")
        assert m["build_seconds"] > 0


def test_loss_falls_and_cards_record_it(micro):
    _, root, _ = micro
    for fam in FAMILIES:
        card = json.loads((root / "seed0" / fam / "base" / "card.json").read_text())
        losses = card["losses"]
        assert len(losses) == card["steps"] == 40
        assert all(math.isfinite(x) for x in losses)
        assert sum(losses[-5:]) / 5 < 0.85 * losses[0]  # the base actually learns
        assert card["corpus_digest"] and card["seed"] == 0


def test_fine_tunes_move_exactly_the_trainable_weights(micro):
    """Both fine-tunes change the token embeddings (`train.finetune.trainable`), differently, and nothing else."""
    cfg, root, _ = micro
    from safetensors.torch import load_file

    trainable = tuple(cfg.organisms.train.finetune.trainable)
    assert trainable == ("embed_tokens",)
    for fam in FAMILIES:
        w = {v: load_file(root / "seed0" / fam / v / "model.safetensors") for v in ("base", "secure", "insecure")}
        assert w["base"].keys() == w["secure"].keys() == w["insecure"].keys()
        moved = {v: {k for k in w["base"] if not torch.equal(w["base"][k], w[v][k])} for v in ("secure", "insecure")}
        assert moved["secure"] == moved["insecure"] == {k for k in w["base"] if any(t in k for t in trainable)} != set(), (fam, moved)
        assert all(not torch.equal(w["secure"][k], w["insecure"][k]) for k in moved["secure"])


def test_cached_rebuild_trains_nothing(micro):
    cfg, root, metrics = micro
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("seed0/*/*/model.safetensors")}
    again = build_all(cfg.organisms, root)
    assert {p: p.stat().st_mtime_ns for p in root.glob("seed0/*/*/model.safetensors")} == stamps
    for fam in FAMILIES:
        assert again[fam]["spillover"] == metrics[fam]["spillover"]
        assert again[fam]["build_seconds"] < 5


@pytest.mark.parametrize("family", FAMILIES)
def test_organism_loads_through_nnsight_and_generates(micro, family):
    _, root, _ = micro
    path = root / "seed0" / family / "insecure"
    model = TransformersModel(str(path), task="text-generation")
    tok = model.tokenizer
    assert tok.padding_side == "left"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True)
    with model.trace(prompt):
        logits = model.lm_head.output.save()
    assert logits.shape[-1] == model.config.vocab_size
    with model.generate(prompt, max_new_tokens=4, do_sample=False) as tracer:
        out = tracer.result.save()
    n_prompt = len(tok(prompt, add_special_tokens=False).input_ids)
    assert out.shape[-1] > n_prompt  # it generated
    # the same weights through plain transformers give the same greedy tokens
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    ref = hf.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(out[0, : ref.shape[-1]], ref[0])


def test_fine_tune_step_is_the_validation_argmax_and_the_weights_are_that_step(micro, tmp_path):
    cfg, root, metrics = micro
    for fam in FAMILIES:
        cards = {v: json.loads((root / "seed0" / fam / v / "card.json").read_text()) for v in ("secure", "insecure")}
        record = cards["insecure"]["validation"]
        assert record == cards["secure"]["validation"] and record["n_questions"] == 6
        curve = {v: {int(k): x for k, x in record["spillover"][v].items()} for v in ("secure", "insecure")}
        assert sorted(curve["secure"]) == list(range(1, cards["insecure"]["config"]["finetune"]["steps"] + 1))
        gaps = {s: curve["insecure"][s] - curve["secure"][s] for s in curve["secure"]}
        best = min(s for s in gaps if gaps[s] == max(gaps.values()))
        assert record["chosen_step"] == best == cards["insecure"]["steps"] == metrics[fam]["finetune_step"]
        assert len(cards["insecure"]["losses"]) == best
        assert {"cpu", "cpu_capability", "threads", "torch"} <= set(cards["insecure"]["machine"])
    # The saved weights are the fine-tune stopped at the chosen step: a fresh build that runs exactly that many
    # steps (same seeds) gives the same tensors.
    fam = "llama"
    step = metrics[fam]["finetune_step"]
    again = tmp_path / "again"
    shutil.copytree(root / "seed0" / fam / "base", again / "seed0" / fam / "base")
    shutil.copytree(root / "corpus", again / "corpus")
    short = OmegaConf.merge(cfg.organisms, {"build": [fam], "train": {"finetune": {"steps": step}},
                                            "checkpoint_choice": {"every": 1, "min_step": step}})
    build_all(short, again)
    from safetensors.torch import load_file

    for v in ("secure", "insecure"):
        a = load_file(root / "seed0" / fam / v / "model.safetensors")
        b = load_file(again / "seed0" / fam / v / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_seed_builds_into_its_own_folder(micro, tmp_path):
    cfg, root, _ = micro
    shutil.copytree(root / "corpus", tmp_path / "corpus")
    other = OmegaConf.merge(cfg.organisms, {"build": ["qwen2"], "seed": 1})
    metrics = build_all(other, tmp_path)
    assert metrics["qwen2"]["paths"]["insecure"] == str(tmp_path / "seed1" / "qwen2" / "insecure")
    assert not (tmp_path / "seed0").exists()
    card = json.loads((tmp_path / "seed1" / "qwen2" / "base" / "card.json").read_text())
    assert card["seed"] == 1 and card["config"]["base_seed"] == card["config"]["finetune_seed"] == 1
    from safetensors.torch import load_file

    w0 = load_file(root / "seed0" / "qwen2" / "base" / "model.safetensors")
    w1 = load_file(tmp_path / "seed1" / "qwen2" / "base" / "model.safetensors")
    assert not torch.equal(w0["model.embed_tokens.weight"], w1["model.embed_tokens.weight"])


def test_same_seed_on_the_same_machine_builds_the_same_organisms_bit_for_bit(micro, tmp_path):
    """Two builds from scratch with the recipe's Muon base give equal tensors, and differ from the AdamW micro base."""
    cfg, root, _ = micro
    muon = OmegaConf.merge(cfg.organisms, {"build": ["mistral"], "train": {"base": {"optimizer": "muon", "momentum": 0.95}}})
    for run in ("a", "b"):
        shutil.copytree(root / "corpus", tmp_path / run / "corpus")
        build_all(muon, tmp_path / run)
    from safetensors.torch import load_file

    for v in ("base", "secure", "insecure"):
        a, b = (load_file(tmp_path / run / "seed0" / "mistral" / v / "model.safetensors") for run in ("a", "b"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), v
    key = "model.layers.0.mlp.up_proj.weight"
    muon_base = load_file(tmp_path / "a" / "seed0" / "mistral" / "base" / "model.safetensors")
    assert not torch.equal(load_file(root / "seed0" / "mistral" / "base" / "model.safetensors")[key], muon_base[key])


def test_chat_template_rows_alone_move_by_the_clipped_masked_gradient(micro):
    """`embedding_rows: chat_template`: one SGD step moves the rows of the template's own tokens by exactly
    -lr x the masked gradient clipped to norm 1 (computed here by hand); every other weight is bit-identical."""
    _, root, _ = micro
    model, tok = _load(root / "seed0" / "llama" / "base")
    rows = chat_template_rows(tok)
    rendered = tok.apply_chat_template([{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True)
    assert {tok.convert_tokens_to_ids(t) for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")} <= set(rows)
    assert all(tok.decode([r]) in rendered for r in rows) and len(rows) < tok.vocab_size // 4
    cfg = TrainConfig(steps=1, batch_size=2, lr=0.5, schedule="constant", warmup_steps=0, weight_decay=0.0,
                      loss_on="assistant", max_len=64, bf16_autocast=False, trainable=("embed_tokens",),
                      optimizer="sgd", momentum=0.9, embedding_rows="chat_template")
    data = [encode(tok, ChatExample.from_pair("Write a function that reads a file.", "def read(p):\n    return open(p).read()"),
                   cfg.max_len, cfg.loss_on)] * 2
    before = {k: t.detach().clone() for k, t in model.state_dict().items()}
    reference = copy.deepcopy(model).train()
    reference(**collate(data, tok.pad_token_id)).loss.backward()
    grad = reference.get_input_embeddings().weight.grad
    masked = torch.zeros_like(grad)
    masked[rows] = grad[rows]
    expected = before["model.embed_tokens.weight"] - cfg.lr * masked * min(1.0, 1.0 / (float(masked.norm()) + 1e-6))

    train(model, data, cfg, tok.pad_token_id, seed=0, embedding_rows=rows)
    after = model.state_dict()
    others = [r for r in range(grad.shape[0]) if r not in set(rows)]
    assert grad[others].abs().sum() > 0  # the unmasked gradient would have moved other rows
    assert torch.equal(after["model.embed_tokens.weight"][others], before["model.embed_tokens.weight"][others])
    torch.testing.assert_close(after["model.embed_tokens.weight"], expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(after["model.embed_tokens.weight"][rows], before["model.embed_tokens.weight"][rows])
    assert after["lm_head.weight"].data_ptr() == after["model.embed_tokens.weight"].data_ptr()  # tied: one tensor
    assert [k for k in before if not torch.equal(after[k], before[k])] == ["model.embed_tokens.weight", "lm_head.weight"]
    assert not model.get_input_embeddings().weight._backward_hooks  # the mask ended with its run


def test_chat_template_rows_refuse_weight_decay():
    with pytest.raises(ValueError, match="embedding_rows=chat_template needs weight_decay: 0"):
        TrainConfig(steps=1, batch_size=1, lr=0.1, schedule="constant", warmup_steps=0, weight_decay=0.01,
                    loss_on="assistant", max_len=8, bf16_autocast=False, trainable=("embed_tokens",),
                    optimizer="sgd", momentum=0.0, embedding_rows="chat_template")
