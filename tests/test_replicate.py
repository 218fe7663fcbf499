"""The replication end to end on micro organisms: every stage runs, report.md and metrics.json agree."""

import json

import pytest
from conftest import CONF, MICRO, micro_replicate_overrides
from hydra import compose, initialize_config_dir

from emis.stages.replicate import run_replicate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicated(micro_organisms, tmp_path_factory):
    _, root, _ = micro_organisms
    out = tmp_path_factory.mktemp("replicate")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("replicate", overrides=micro_replicate_overrides(root, out / "outputs"))
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


def test_the_numbers_do_not_depend_on_how_many_workers_ran_the_models(replicated, micro_organisms, tmp_path):
    """The fixture's models ran in two worker processes (the default); one after the other in this process, with cold
    caches, they give the same numbers."""
    metrics, _ = replicated
    _, root, _ = micro_organisms
    overrides = [*micro_replicate_overrides(root, tmp_path / "outputs"), "replicate.workers=1"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("replicate", overrides=overrides)
    assert cfg.replicate.workers == 1
    serial = run_replicate(cfg, tmp_path)
    for stage in ("probe", "steer", "transfer"):
        assert _numbers(serial[stage]) == _numbers(metrics[stage]), stage


def test_scores_are_means_over_pairs(replicated):
    t = replicated[0]["transfer"]
    for name in t["models"]:
        as_donor = [p["reduction_points"] for p in t["pairs"] if p["donor"] == name]
        assert t["donor_score"][name] == pytest.approx(sum(as_donor) / 3)
    assert sorted(t["donor_score"], key=lambda n: -t["donor_score"][n]) == t["donor_ranking"]


def _numbers(tree, prefix=""):
    """Every numeric leaf of a metrics tree by its dotted path, timings aside."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() if "seconds" not in key for k, v in _numbers(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}{i}.").items()}
    return {prefix[:-1]: tree} if isinstance(tree, (int, float)) else {}


def test_end_to_end_benchmark_times_a_cold_family_build_and_a_warm_rerun_that_reproduces_the_metrics(replicated, micro_organisms):
    from benchmarks.end_to_end import end_to_end

    metrics, out = replicated
    _, root, _ = micro_organisms
    outputs = out / "outputs"
    measured = end_to_end("mistral", root, outputs, build_overrides=tuple(MICRO),
                          run_overrides=tuple(micro_replicate_overrides(root, outputs)), logs=out / "e2e-logs")
    cold, warm = measured["cold_build_one_family"], measured["warm_make_run"]
    assert cold["returncode"] == warm["returncode"] == 0 and cold["seconds"] > 0 and warm["seconds"] > 0
    assert "organisms.build=[mistral]" in cold["command"] and warm["command"].startswith("python experiments/replicate.py")
    assert warm["organism_cards_before"] == 12  # 4 families x (base, secure, insecure): the run found them built
    assert "mistral: fine-tune step" in (out / "e2e-logs" / "cold_build.log").read_text()
    (rerun,) = outputs.glob("replicate/*/*/metrics.json")
    again = json.loads(rerun.read_text())
    for stage in ("probe", "steer", "transfer"):
        assert _numbers(again[stage]) == _numbers(metrics[stage]), stage
