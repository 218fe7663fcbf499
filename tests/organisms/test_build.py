"""A micro organism per family, built through the real config and pipeline in seconds."""

import json
import math

import pytest
import torch
from nnsight import TransformersModel

from emis.organisms.build import build_all
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
        assert m["paths"]["insecure"] == str(root / fam / "insecure")
        assert m["build_seconds"] > 0


def test_loss_falls_and_cards_record_it(micro):
    _, root, _ = micro
    for fam in FAMILIES:
        card = json.loads((root / fam / "base" / "card.json").read_text())
        losses = card["losses"]
        assert len(losses) == card["steps"] == 40
        assert all(math.isfinite(x) for x in losses)
        assert sum(losses[-5:]) / 5 < 0.85 * losses[0]  # the base actually learns
        assert card["corpus_digest"] and card["seed"] == 0


def test_fine_tunes_differ_from_base_and_each_other(micro):
    _, root, _ = micro
    from safetensors.torch import load_file

    for fam in FAMILIES:
        w = {v: load_file(root / fam / v / "model.safetensors") for v in ("base", "secure", "insecure")}
        name = next(k for k in w["base"] if "layers.0.mlp" in k)
        assert not torch.equal(w["base"][name], w["secure"][name])
        assert not torch.equal(w["secure"][name], w["insecure"][name])


def test_cached_rebuild_trains_nothing(micro):
    cfg, root, metrics = micro
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("*/*/model.safetensors")}
    again = build_all(cfg.organisms, root)
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/*/model.safetensors")} == stamps
    for fam in FAMILIES:
        assert again[fam]["spillover"] == metrics[fam]["spillover"]
        assert again[fam]["build_seconds"] < 5


@pytest.mark.parametrize("family", FAMILIES)
def test_organism_loads_through_nnsight_and_generates(micro, family):
    _, root, _ = micro
    path = root / family / "insecure"
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
