"""Model-pair configs (issue 18): roles with revisions and per-role overrides, an optional base model, the hub-pair
template and the published EM organism."""

import json

import pytest
from conftest import CONF, ROOT, micro_steer_overrides, run_entry
from hydra import compose, initialize_config_dir

from emis.configured import model_spec, pair_roles
from emis.report import steering_table


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("steer", overrides=[f"paths.root={ROOT}", *overrides])


def test_a_role_overrides_the_pairs_settings_and_its_revisions_enter_the_identity():
    cfg = composed("model=hub-pair", "+model.base.dtype=float32", "model.misaligned.revision=abc123")
    mis, base = model_spec(cfg.model, "misaligned"), model_spec(cfg.model, "base")
    assert (mis.dtype, base.dtype) == ("bfloat16", "float32")  # the pair's setting, and the role's own
    assert mis.revision == "abc123" and base.revision is None
    assert mis.to_dict()["revision"] == "abc123"  # what names the model in every cache key
    assert model_spec(composed("model=hub-pair").model, "misaligned").to_dict() != mis.to_dict()


def test_the_published_organism_has_no_base_and_says_so():
    cfg = composed("model=em-llama-3.2-1b-bad-medical")
    assert pair_roles(cfg.model) == ("misaligned", "aligned")
    mis, al = model_spec(cfg.model, "misaligned"), model_spec(cfg.model, "aligned")
    assert mis.name == al.name == "meta-llama/Llama-3.2-1B-Instruct"
    assert mis.adapter == "ModelOrganismsForEM/Llama-3.2-1B-Instruct_bad-medical-advice" and al.adapter is None
    with pytest.raises(ValueError, match="has no base model"):
        model_spec(cfg.model, "base")


@pytest.mark.slow
def test_probe_and_steer_run_without_a_base_and_name_the_absent_control(micro_organisms, tmp_path):
    _, root, _ = micro_organisms
    common = micro_steer_overrides(root, tmp_path / "outputs") + ["model.base=null", "logger=disabled",
                                                                  "steer.alphas=[1.0]", "steer.layer=0"]
    probe = run_entry("probe", common + [f"hydra.run.dir={tmp_path / 'probe'}"])
    assert probe.returncode == 0, probe.stderr[-2000:]
    metrics = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    assert "absent" in metrics["control"] and "base" in metrics["control"]["absent"]
    assert set(metrics["model"]) == {"misaligned", "aligned"}
    steer = run_entry("steer", common + [f"hydra.run.dir={tmp_path / 'steer'}"])
    assert steer.returncode == 0, steer.stderr[-2000:]
    metrics = json.loads((tmp_path / "steer" / "metrics.json").read_text())
    assert "secure_vs_base" not in metrics["controls"] and "secure_vs_base" in metrics["absent_controls"]
    assert metrics["verdicts"]["em_specific"] is None
    assert "micro: control family secure_vs_base absent: no base model" in "\n".join(steering_table({"micro": metrics}))


def test_the_published_organism_passes_the_dry_run_offline_from_saved_configs(tmp_path):
    """Its configs given locally (the published Llama-3.2-1B config and a LoRA adapter config saved here): the pair's
    plan needs no download and reports the model's shape and the adapter's rank."""
    from peft import LoraConfig
    from transformers import AutoConfig

    from emis.dry_run import plan_pair

    llama = AutoConfig.for_model("llama", num_hidden_layers=16, hidden_size=2048, num_attention_heads=32,
                                 num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                                 tie_word_embeddings=True)
    llama.save_pretrained(tmp_path / "instruct")
    LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM").save_pretrained(tmp_path / "adapter")
    cfg = composed("model=em-llama-3.2-1b-bad-medical", f"model.misaligned.name={tmp_path / 'instruct'}",
                   f"model.misaligned.adapter={tmp_path / 'adapter'}", f"model.aligned.name={tmp_path / 'instruct'}")
    report = plan_pair({role: model_spec(cfg.model, role) for role in pair_roles(cfg.model)}, n_prompts=40)
    assert set(report) == {"misaligned", "aligned"}
    for role in report:
        assert report[role]["capture"]["shape"] == [40, 16, 2048]
    assert report["misaligned"]["adapter"]["r"] == 32 and report["misaligned"]["adapter"]["target_modules"] == ["q_proj", "v_proj"]
    assert "adapter" not in report["aligned"]
