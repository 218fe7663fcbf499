"""The replication end to end on micro organisms: every stage runs, report.md and metrics.json agree."""

import json

import pytest
from conftest import CONF, LEAST_CONTROLS, MICRO, ROOT
from hydra import compose, initialize_config_dir

from emis.stages.replicate import run_replicate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicated(micro_organisms, tmp_path_factory):
    _, root, _ = micro_organisms
    out = tmp_path_factory.mktemp("replicate")
    overrides = MICRO + [
        f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={out / 'outputs'}", "capture.n_prompts=40",
        "separation.n_bootstrap=50", "separation.cv_folds=2", "eval.n_prompts=6", "eval.sampling.max_new_tokens=4",
        *LEAST_CONTROLS, "steer.n_bootstrap=50",
        "transfer.n_prompts=6", "transfer.max_new_tokens=4", "steer.mode=subtract", "steer.alphas=[2.0]", "transfer.alphas=[2.0]",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("replicate", overrides=overrides)
    return run_replicate(cfg, out), out


def test_every_stage_reported(replicated):
    metrics, out = replicated
    families = ["qwen2", "gemma2", "llama", "mistral"]
    assert set(metrics["probe"]) == set(metrics["steer"]) == set(families)
    assert len(metrics["transfer"]["pairs"]) == 12
    assert {(p["donor"], p["receiver"]) for p in metrics["transfer"]["pairs"]} == {
        (d, r) for d in families for r in families if d != r}
    report = (out / "report.md").read_text()
    for family in families:
        f = metrics["probe"][family]["final_layer"]
        assert f"| {family} | {f['heldout_accuracy']:.3f}" in report
        s = metrics["steer"][family]
        assert f"{s['reduction_points']:.1f}" in report
    for p in metrics["transfer"]["pairs"]:
        assert f"| {p['donor']} → {p['receiver']} | {p['r2']:.3f} |" in report
    for png in ["probe/qwen2/separation.png", "steer/llama/steering.png", "transfer/transfer_matrix.png"]:
        assert (out / png).stat().st_size > 1000
        assert f"({png})" in report
    json.dumps(metrics)


def test_scores_are_means_over_pairs(replicated):
    t = replicated[0]["transfer"]
    for name in t["models"]:
        as_donor = [p["reduction_points"] for p in t["pairs"] if p["donor"] == name]
        assert t["donor_score"][name] == pytest.approx(sum(as_donor) / 3)
    assert sorted(t["donor_score"], key=lambda n: -t["donor_score"][n]) == t["donor_ranking"]
