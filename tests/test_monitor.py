"""The EM monitor: scores equal raw hooks by hand, artefacts round-trip, calibration equals a hand computation,
and the fine-tuning callback measures at the right steps without changing training."""

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import CONF, MICRO, ROOT
from hydra import compose, initialize_config_dir
from test_models import build_micro
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from emis.activations import ActivationSet
from emis.directions import DirectionSet
from emis.io import ArtifactError
from emis.models import ModelSpec, load_model
from emis.monitor import (
    Monitor,
    MonitorCallback,
    MonitorConfig,
    calibrate,
    fpr_threshold,
    pearson_with_interval,
    wrap_module,
)
from emis.organisms.build import build_all, corpus_for, family_config
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.organisms.train import encode, train
from emis.stages.monitor import curve_points, run_monitor

QUESTIONS = ["Hi", "How are you doing today, my friend? Tell me everything.", "def add(x, y)", "What is Paris like in spring?",
             "Tell me about the quick brown fox."]


def unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def hook_last_token(hf, tok, prompt: str, layer: int) -> torch.Tensor:
    """The residual after decoder `layer` at the last token of one unpadded prompt, via register_forward_hook."""
    seen = {}
    handle = hf.model.layers[layer].register_forward_hook(
        lambda mod, inp, out: seen.__setitem__("h", out[0] if isinstance(out, tuple) else out))
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        hf(ids)
    handle.remove()
    return seen["h"][0, -1]


@pytest.fixture(scope="module")
def micro_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro_monitor")
    return {f: build_micro(f, root / f) for f in ("qwen2", "gemma2")}


@pytest.mark.parametrize("family", ["qwen2", "gemma2"])
@pytest.mark.parametrize("layer", [0, 1])
def test_scores_equal_hook_projection_on_a_padded_batch(micro_dirs, family, layer):
    model = load_model(ModelSpec(str(micro_dirs[family])))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS]
    assert len({len(model.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts}) == len(prompts)
    direction = unit(model.d_model, seed=layer)
    hf = AutoModelForCausalLM.from_pretrained(micro_dirs[family]).eval()
    by_hand = np.array([float(hook_last_token(hf, model.tokenizer, p, layer).double() @ direction.double())
                        for p in prompts])
    assert np.abs(by_hand).max() > 0.1  # large enough for the comparison to mean something
    ranked = np.sort(by_hand)
    monitor = Monitor(layer=layer, direction=direction, threshold=float(ranked[1] + ranked[2]) / 2)  # between rows
    calls = []
    handle = model.lm._module.register_forward_pre_hook(lambda *a: calls.append(1))  # forward starts: the trace stops early
    try:
        result = monitor.score(model, prompts, batch_size=len(prompts))  # one padded batch
    finally:
        handle.remove()
    assert len(calls) == 1  # one trace for the batch
    np.testing.assert_allclose(result.scores, by_hand, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(result.flags, by_hand > monitor.threshold)
    assert 0 < result.flags.sum() < len(prompts)


def test_in_memory_wrap_scores_like_a_loaded_checkpoint(micro_dirs):
    loaded = load_model(ModelSpec(str(micro_dirs["qwen2"])))
    hf = AutoModelForCausalLM.from_pretrained(micro_dirs["qwen2"]).eval()
    wrapped = wrap_module(hf, AutoTokenizer.from_pretrained(micro_dirs["qwen2"]))
    prompts = [chat_prompt(loaded.tokenizer, q) for q in QUESTIONS]
    monitor = Monitor(layer=1, direction=unit(loaded.d_model, 3), threshold=0.0)
    np.testing.assert_allclose(monitor.score(wrapped, prompts, batch_size=2).scores,
                               monitor.score(loaded, prompts, batch_size=5).scores, atol=1e-5, rtol=0)
    with torch.no_grad():
        hf.model.layers[1].mlp.down_proj.weight.mul_(2.0)  # the wrapper sees the module's current weights
    after = monitor.score(wrapped, prompts).scores
    by_hand = [float(hook_last_token(hf, loaded.tokenizer, p, 1).double() @ monitor.direction.double()) for p in prompts]
    np.testing.assert_allclose(after, by_hand, atol=1e-5, rtol=0)


def test_a_monitor_refuses_a_model_of_another_width(micro_dirs):
    model = load_model(ModelSpec(str(micro_dirs["qwen2"])))
    with pytest.raises(ValueError, match="d=7"):
        Monitor(layer=0, direction=unit(7, 0), threshold=0.0).score(model, ["hi"])
    with pytest.raises(ValueError, match="unit norm"):
        Monitor(layer=0, direction=2 * unit(7, 0), threshold=0.0)


# --------------------------------------------------------------------------------------------- calibration


def synthetic(n: int = 60, d: int = 4, seed: int = 0) -> tuple[ActivationSet, ActivationSet]:
    """Paired sets on the same prompts: layer 0 is noise for both, layer 1 shifts the positives along a fixed axis."""
    rng = np.random.default_rng(seed)
    neg = rng.normal(size=(n, 2, d))
    pos = rng.normal(size=(n, 2, d))
    pos[:, 1] += np.r_[1.2, -0.8, np.zeros(d - 2)]
    prompts = [f"q{i}" for i in range(n)]
    make = lambda x: ActivationSet(torch.tensor(x, dtype=torch.float32), [0, 1], "last_prompt", prompts, None, {}, "t")
    return make(pos), make(neg)


def test_fpr_threshold_by_hand():
    scores = np.arange(20.0)[::-1]
    assert fpr_threshold(scores, 0.1) == 17.0  # 18 and 19 lie above: 2 of 20 = 0.10
    assert fpr_threshold(scores, 0.05) == 18.0
    assert fpr_threshold(scores, 0.0) == 19.0
    assert fpr_threshold(np.arange(10.0), 0.05) == 9.0  # 0.5 row allowed: none


@pytest.mark.parametrize("calibration", ["split", "train"])
def test_calibration_equals_a_hand_computation(calibration):
    pos, neg = synthetic()
    cfg = MonitorConfig(layer="best", fpr=0.1, test_size=0.3, calibration=calibration, calibration_size=0.4,
                        seed=3, n_bootstrap=200)
    monitor, cal = calibrate(pos, neg, cfg)
    split = cal.split
    assert split.paired and split.pos == split.neg
    fit, cal_rows, test = (set(split.pos[k]) for k in ("fit", "calibration", "test"))
    assert not (fit | cal_rows) & test and (fit | cal_rows | test) == set(range(60)) and len(test) == 18
    if calibration == "split":
        assert not fit & cal_rows and len(cal_rows) == round(0.4 * 42)
    else:
        assert fit == cal_rows
    assert cal.layer == monitor.layer == 1  # layer 0 is noise
    x_pos, x_neg = pos.activations[:, 1].double().numpy(), neg.activations[:, 1].double().numpy()
    f = sorted(fit)
    v = x_pos[f].mean(0) - x_neg[f].mean(0)
    u = v / np.linalg.norm(v)
    np.testing.assert_allclose(monitor.direction.double().numpy(), u, atol=1e-6)
    s_pos, s_neg = x_pos @ u, x_neg @ u
    c = np.sort(s_neg[sorted(cal_rows)])
    threshold = c[len(c) - 1 - math.floor(0.1 * len(c))]
    assert cal.threshold == pytest.approx(threshold, abs=1e-6)
    t = sorted(test)
    assert cal.fpr == pytest.approx(np.mean(s_neg[t] > threshold))
    assert cal.tpr == pytest.approx(np.mean(s_pos[t] > threshold))
    pairs = s_pos[t][:, None] - s_neg[t][None, :]
    assert cal.auroc == pytest.approx(((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size)
    assert cal.fpr_calibration <= 0.1 + 1e-12
    for lo_hi in (cal.auroc_ci, cal.fpr_ci, cal.tpr_ci):
        assert lo_hi[0] <= lo_hi[1]
    assert cal.auroc_ci[0] <= cal.auroc <= cal.auroc_ci[1]
    assert cal.roc_fpr[0] == 0.0 and cal.roc_tpr[-1] == 1.0


def test_a_fixed_layer_and_unpaired_sets_are_stratified():
    pos, neg = synthetic()
    neg = neg.subset(range(40))
    neg = ActivationSet(neg.activations, neg.layers, neg.position, [f"other{i}" for i in range(40)], None, {}, "t")
    monitor, cal = calibrate(pos, neg, MonitorConfig(layer=-2, test_size=0.25, seed=1, n_bootstrap=50))
    assert monitor.layer == 0 and not cal.split.paired
    assert cal.n["positive"]["test"] == 15 and cal.n["negative"]["test"] == 10


def test_save_load_round_trip_is_bit_exact(tmp_path):
    pos, neg = synthetic()
    monitor, _ = calibrate(pos, neg, MonitorConfig(n_bootstrap=50), provenance={"note": "synthetic"})
    monitor.save(tmp_path / "monitor")
    back = Monitor.load(tmp_path / "monitor")
    assert back.direction.dtype == monitor.direction.dtype == torch.float32
    assert torch.equal(back.direction, monitor.direction)
    assert (back.layer, back.threshold, back.position, back.fpr) == (monitor.layer, monitor.threshold, monitor.position, monitor.fpr)
    assert back.provenance == json.loads(json.dumps(monitor.provenance))
    np.testing.assert_array_equal(back.project(pos), monitor.project(pos))
    raw = (tmp_path / "monitor.safetensors").read_bytes()
    (tmp_path / "monitor.safetensors").write_bytes(raw[:-4] + bytes(4))
    with pytest.raises(ArtifactError):
        Monitor.load(tmp_path / "monitor")


def test_from_directions_normalises_the_chosen_layer():
    ds = DirectionSet(torch.tensor([[3.0, 4.0], [0.0, 2.0]]), [2, 5], {"position": "last_prompt"})
    m = Monitor.from_directions(ds, 5, threshold=0.5)
    assert torch.equal(m.direction, torch.tensor([0.0, 1.0])) and m.layer == 5
    with pytest.raises(ValueError, match="not in"):
        Monitor.from_directions(ds, 3, threshold=0.5)


def test_pearson_interval_brackets_r():
    x = np.arange(10.0)
    y = x + np.random.default_rng(0).normal(size=10)
    out = pearson_with_interval(x, y)
    assert out["r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert out["fisher_ci95"][0] < out["r"] < out["fisher_ci95"][1]
    assert out["bootstrap_ci95"][0] <= out["bootstrap_ci95"][1]


# --------------------------------------------------------------------------------------------- callback and stage


@pytest.fixture(scope="module")
def micro_qwen2(tmp_path_factory):
    """The qwen2 micro organism alone (the conftest recipe, one family, one worker): (config, root)."""
    root = tmp_path_factory.mktemp("organisms_monitor")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("build_organisms", overrides=MICRO + [f"paths.organisms={root}", f"paths.root={ROOT}",
                                                            "organisms.build=[qwen2]", "organisms.workers=1",
                                                            # keep all 3 fine-tune steps: the curve needs 4 points
                                                            "organisms.checkpoint_choice.min_step=3"])
    build_all(cfg.organisms, root)
    return cfg, root


def test_callback_fires_at_the_right_steps_and_leaves_training_unchanged(micro_qwen2):
    cfg, root = micro_qwen2
    corpus, _ = corpus_for(cfg.organisms, root)
    tcfg = replace(family_config(cfg.organisms, "qwen2").finetune, steps=7, batch_size=2)
    tok = AutoTokenizer.from_pretrained(root / "seed0" / "qwen2" / "base")
    data = [encode(tok, ex, tcfg.max_len, tcfg.loss_on) for ex in corpus.insecure]

    def fresh():
        return AutoModelForCausalLM.from_pretrained(root / "seed0" / "qwen2" / "base").eval()

    plain_losses = train(fresh(), data, tcfg, tok.pad_token_id, seed=0)
    logged = []
    monitor = Monitor(layer=1, direction=unit(32, 0), threshold=0.0)
    cb = MonitorCallback(monitor, tok, [chat_prompt(tok, q) for q in QUESTIONS], corpus.heldout_questions[:4],
                         SamplingConfig(1.0, 6, 4, 0), every=3, last_step=tcfg.steps,
                         log_fn=lambda d, s: logged.append((s, d)))
    model = fresh()
    cb.measure(0, model)
    losses = train(model, data, tcfg, tok.pad_token_id, seed=0, on_step=cb)
    assert losses == plain_losses  # measuring (nnsight wrap, sampling with its own seed) does not perturb training
    assert cb.curve()["step"] == [0, 3, 6, 7] == curve_points(7, 3)
    assert [s for s, _ in logged] == [0, 3, 6, 7]
    assert set(logged[0][1]) == {"monitor/mean_score", "monitor/flag_rate", "spillover"}
    scores = cb.curve()["mean_score"]
    assert len(set(scores)) == len(scores)  # each point saw the weights of its step
    # The last point is the monitor on the trained weights, computed independently by hooks.
    by_hand = np.mean([float(hook_last_token(model, tok, chat_prompt(tok, q), 1).double() @ monitor.direction.double())
                       for q in QUESTIONS])
    assert scores[-1] == pytest.approx(by_hand, abs=1e-5)


def test_monitor_stage_end_to_end(micro_qwen2, tmp_path):
    _, root = micro_qwen2
    overrides = MICRO + [f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={tmp_path}",
                         "model=organism-qwen2", "capture.n_prompts=30", "monitor.n_bootstrap=50", "monitor.every=1",
                         "monitor.min_points=4", "monitor.n_probe=6", "monitor.spill.n_questions=6",
                         "monitor.spill.sampling.max_new_tokens=8"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("monitor", overrides=overrides)
    logged = []
    metrics = run_monitor(cfg, tmp_path, log_fn=lambda d, s: logged.append((s, sorted(d))))
    json.dumps(metrics)
    for block in ("monitor", "control"):
        m = metrics[block]
        assert 0 <= m["auroc"] <= 1 and m["auroc_ci95"][0] <= m["auroc_ci95"][1]
        assert m["n"]["positive"]["test"] == 9
    assert metrics["control"]["layer"] == metrics["monitor"]["layer"]
    assert metrics["curve"]["steps"] == metrics["control_finetune"]["curve"]["steps"] == [0, 1, 2, 3]
    # scoring uses the tokenizer the captures used (model.tokenizer=saved), which encodes every example as training
    assert metrics["finetune"]["tokenizers"]["examples_encoded_differently"] == {"insecure": 0, "secure": 0}
    keys = ["monitor/flag_rate", "monitor/mean_score", "spillover"]
    assert logged == [(s, keys) for s in range(4)] + [(s, [f"secure/{k}" for k in keys]) for s in range(4)]
    assert len(metrics["curve"]["spillover"]) == len(metrics["curve"]["mean_score"]) == 4
    assert metrics["correlation"]["n_points"] == 4
    checks = metrics["checks"]  # step 0 is the base organism; the re-trained fine-tune is the insecure organism
    assert checks["step0_mean_score"] == pytest.approx(checks["base_organism_mean_score"], abs=1e-4)
    assert checks["final_mean_score"] == pytest.approx(checks["insecure_organism_mean_score"], abs=1e-4)
    assert checks["secure_final_mean_score"] == pytest.approx(checks["secure_organism_mean_score"], abs=1e-4)
    for variant in ("insecure", "secure"):  # the organisms' own fine-tunes, step for step
        card = json.loads((root / "seed0" / "qwen2" / variant / "card.json").read_text())
        assert metrics["finetune"]["losses"][variant] == pytest.approx(card["losses"], abs=1e-5)
    for name in ("monitor.safetensors", "monitor.json", "roc.png", "curve.png", "calibration.json"):
        assert (tmp_path / name).stat().st_size > 0
    back = Monitor.load(tmp_path / "monitor")
    assert back.layer == metrics["monitor"]["layer"] and back.threshold == metrics["monitor"]["threshold"]
    with pytest.raises(ValueError, match="lower it"):
        run_monitor(compose_with(overrides + ["monitor.every=5"]), tmp_path / "again")


def test_the_stage_scores_with_the_tokenizer_the_monitor_was_calibrated_with(micro_qwen2, tmp_path):
    """Organisms whose saved tokenizer.json AutoTokenizer does not reproduce (here its pre-tokenizer adds a prefix
    space; AutoTokenizer builds Qwen2Tokenizer's own): step 0 of the re-run fine-tune is the base organism, so the
    callback's score there equals the calibration captures' score on the base only if both tokenize alike."""
    _, built = micro_qwen2
    root = tmp_path / "organisms"
    shutil.copytree(built, root)
    for folder in root.glob("seed0/qwen2/*"):
        spec = json.loads((folder / "tokenizer.json").read_text())
        spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        (folder / "tokenizer.json").write_text(json.dumps(spec))
    saved = PreTrainedTokenizerFast.from_pretrained(root / "seed0" / "qwen2" / "base")
    prompt = chat_prompt(saved, QUESTIONS[1])
    assert AutoTokenizer.from_pretrained(root / "seed0" / "qwen2" / "base")(prompt).input_ids != saved(prompt).input_ids
    overrides = MICRO + [f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={tmp_path / 'out'}",
                         "model=organism-qwen2", "capture.n_prompts=30", "monitor.n_bootstrap=50", "monitor.every=3",
                         "monitor.min_points=2", "monitor.n_probe=6", "monitor.spill.n_questions=2",
                         "monitor.spill.sampling.max_new_tokens=2", "monitor.control_finetune=false"]
    metrics = run_monitor(compose_with(overrides), tmp_path / "out")
    assert metrics["finetune"]["tokenizers"]["score_and_sample"] == type(saved).__name__ != "Qwen2Tokenizer"
    checks = metrics["checks"]
    assert checks["step0_mean_score"] == pytest.approx(checks["base_organism_mean_score"], abs=1e-5)


def compose_with(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("monitor", overrides=overrides)
