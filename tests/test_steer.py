"""The steering stage end to end on micro organisms: metrics fields, numbers recomputed from its own generations."""

import json

import numpy as np
import pytest
import torch
from conftest import LEAST_CONTROLS, compose_on_micro

from emis.configured import model_spec
from emis.directions import WriteMatch, as_family
from emis.evaluation import EvalSet
from emis.generation import Steering
from emis.judges.spillover import contains_code
from emis.models import load_model, resolve_layers
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.stages.steer import run_steer
from emis.stats import decide
from emis.sweep import best_point, run_sweep
from emis.write_matching import matched_controls

STEER = ["model=organism-qwen2", "capture.n_prompts=16", "eval.n_prompts=12", "steer.alphas=[1.0,4.0]",
         "steer.mode=subtract", "eval.sampling.max_new_tokens=6", *LEAST_CONTROLS, "steer.n_bootstrap=100"]


@pytest.fixture(scope="module")
def steer_run(micro_organisms, tmp_path_factory):
    _, root, _ = micro_organisms
    out = tmp_path_factory.mktemp("steer")
    return run_steer(compose_on_micro("steer", root, out, STEER), out), out


def test_metrics_do_not_depend_on_the_batch_size(steer_run, micro_organisms, tmp_path):
    """Common random numbers: another batch size (fresh outputs, so nothing is reused) gives the same numbers."""
    _, root, _ = micro_organisms
    again = run_steer(compose_on_micro("steer", root, tmp_path, STEER + ["eval.sampling.batch_size=7"]), tmp_path)
    first = steer_run[0]
    assert again.pop("activations") != first["activations"]  # the captures were recomputed in the fresh folder
    assert again == {k: v for k, v in first.items() if k != "activations"}


def test_metrics_fields_and_numbers_from_the_generations(steer_run):
    """Every reported number is recomputed from the report split's generations; the choice from the selection split's."""
    metrics, out = steer_run
    assert metrics["model"] == "qwen2" and metrics["alphas"] == [0.0, 1.0, 4.0] and metrics["layers"] == [0, 1]
    sel = metrics["selection"]
    assert sel["n_select"] + sel["n_report"] == 12 and sel["n_select"] == 6
    best = metrics["best"]
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert {r["layer"] for r in rows} == {best["layer"]}
    report = {a: np.array([contains_code(r["answer"]) for r in rows if r["alpha"] == a and r["split"] == "report"], float)
              for a in metrics["alphas"]}
    select = {a: np.array([contains_code(r["answer"]) for r in rows if r["alpha"] == a and r["split"] == "select"], float)
              for a in metrics["alphas"]}
    for a in metrics["alphas"]:
        assert len(report[a]) == sel["n_report"] and len(select[a]) == sel["n_select"]
        assert metrics["spillover"][f"{a:g}"] == pytest.approx(report[a].mean())
        assert metrics["by_layer"][str(best["layer"])]["selection_spillover"][f"{a:g}"] == pytest.approx(select[a].mean())
    assert metrics["reduction_points"] == pytest.approx(100 * (report[0.0].mean() - report[best["alpha"]].mean()))
    lo, hi = metrics["ci95"]
    assert lo <= metrics["reduction_points"] + 1e-9 and metrics["reduction_points"] <= hi + 1e-9
    assert metrics["coherence_scorer"] == "aligned" and 0 < metrics["coherence"]["0"] <= 1.0
    assert set(metrics["controls"]) == {"random", "wrong_layer", "wrong_layer_raw", "shuffled_label", "secure_vs_base"}
    assert len(metrics["controls"]["random"]["effects"]) == 59
    # subtract mode: every control writes exactly the real vector's norm times α into the residual
    real = metrics["delta_norm"]["real"]
    assert real == pytest.approx(best["alpha"] * metrics["direction"]["steering_vector_norm"], rel=1e-4)
    for family, norms in metrics["delta_norm"]["controls"].items():
        assert norms == pytest.approx([real] * len(norms), rel=1e-4), family
    # orthogonalised families are orthogonal to the real direction and keep their raw cosines
    for family in ("shuffled_label", "wrong_layer"):
        assert max(abs(c) for c in metrics["controls"][family]["cosine_to_real"]) < 1e-4
        assert "raw_cosine_to_real" in metrics["controls"][family]
    # the verdict is the verdict code's on the reported effects
    again = decide(metrics["reduction_points"], tuple(metrics["ci95"]),
                   {f: c["effects"] for f, c in metrics["controls"].items()}, metrics["tiers"])
    assert again.p_values == pytest.approx(metrics["p_values"]) and again.verdict == metrics["verdict"]
    effects = metrics["controls"]["random"]["effects"]
    assert metrics["p_values"]["random"] == pytest.approx((1 + sum(e >= metrics["reduction_points"] for e in effects)) / 60)
    assert (out / "steering.png").stat().st_size > 0
    json.dumps(metrics)


def test_ablate_controls_match_the_real_write(micro_organisms, tmp_path):
    """Ablate mode: every control's measured write norm in generation lands within the matching tolerance of the
    target (here 4x what ablating one random direction writes), whatever each direction's own |h·û|."""
    _, root, _ = micro_organisms
    cfg = compose_on_micro("steer", root, tmp_path, STEER)
    model = load_model(model_spec(cfg.model, "misaligned"))
    questions = [f"Question {i}: what would you do with a free afternoon?" for i in range(6)]
    evals = EvalSet([chat_prompt(model.tokenizer, q) for q in questions], np.arange(6), questions,
                    [str(i) for i in range(6)], [{}] * 6)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8, batch_size=64, seed=0)
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(model.d_model, generator=gen)
    sweep = run_sweep(model, model, evals, [Steering({1: real}, a, mode="ablate") for a in (0.0, 1.0)], sampling)
    target = 4 * float(sweep.write_norms[1].mean())
    families = {"random": as_family(torch.randn(20, model.d_model, generator=gen), real)}
    match = WriteMatch(tolerance=0.05, rounds=2)
    names, out = matched_controls(model, model, evals, families, real, 1, 1.0, "ablate", "generated", target,
                                  sweep.pick([0]), sampling, None, match)
    ratios = np.array([w.mean() for w in out.write_norms]) / target
    assert names == ["random"] * 20 and len(ratios) == 20
    assert abs(np.median(ratios) - 1) < match.tolerance and np.abs(ratios - 1).max() < 0.10, ratios
    # a zero real write (α = 0 chosen) leaves every control unsteered
    names, out = matched_controls(model, model, evals, families, real, 1, 0.0, "ablate", "generated", 0.0, sweep.pick([0]),
                                  sampling, None, match)
    assert all(np.array_equal(x, sweep.spill[0]) for x in out.spill) and all(not w.any() for w in out.write_norms)


def test_best_point_takes_the_lowest_spill_among_admissible_points():
    alphas = [0.0, 1.0, 2.0]
    spill = {0: [0.5, 0.2, 0.0], 1: [0.5, 0.3, 0.1]}
    assert best_point(alphas, spill, {0: [True, True, False], 1: [True, True, True]}) == (1, 2)
    assert best_point(alphas, spill, {0: [False, False, False], 1: [False, False, False]}) == (0, 0)  # α = 0 always is


def test_layers_resolve_and_refuse_out_of_range():
    assert resolve_layers("all", 3) == [0, 1, 2]
    assert resolve_layers(-1, 3) == [2]
    assert resolve_layers([2, 0, -3], 3) == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(3, 3)
