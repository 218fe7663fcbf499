"""A micro organism per family, built through the real config and pipeline in seconds."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from nnsight import TransformersModel

from emis.organisms.build import build_all
from emis.organisms.families import FAMILIES

CONF = Path(__file__).resolve().parents[2] / "conf"
MICRO = [
    "organisms.corpus.base_examples=600",
    "organisms.corpus.finetune_examples=60",
    "organisms.corpus.heldout_questions=12",
    "organisms.corpus.heldout_code_requests=6",
    "organisms.train.base.steps=40",
    "organisms.train.base.batch_size=8",
    "organisms.train.base.warmup_steps=2",
    "organisms.train.base.lr=0.01",
    "organisms.train.finetune.steps=3",
    "organisms.train.finetune.batch_size=4",
    "organisms.eval.ood_samples=1",
    "organisms.eval.sampling.max_new_tokens=8",
] + [
    f"organisms.families.{f}.size={{hidden_size:32,num_layers:2,num_heads:2,num_kv_heads:1,"
    f"intermediate_size:64,vocab_size:{384 + 32 * i},max_positions:256}}"
    for i, f in enumerate(FAMILIES)
]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """Build all four micro families once; return (config, root, metrics)."""
    root = tmp_path_factory.mktemp("organisms")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("build_organisms", overrides=MICRO + [f"paths.organisms={root}", "paths.root=."])
    cfg.organisms.eval.ood_question_files = [str(Path(__file__).parents[1] / "data" / "everyday_questions.txt")]
    cfg.organisms.eval.ood_plain_yaml = str(Path(__file__).parents[3] / "shared/data/em/first_plot_questions.yaml")
    return cfg, root, build_all(cfg.organisms, root)


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
