"""The Python API: the README's snippet verbatim on micro organisms, numbers checked against numpy and the stage."""

import numpy as np
import pytest
from conftest import MICRO

import emis


@pytest.fixture
def micro_api(micro_organisms):
    """The API pointed at the micro organisms (their corpus, with 40 evaluation questions) and short answers."""
    _, root, _ = micro_organisms
    corpus = [o for o in MICRO if o.startswith("organisms.corpus") and "heldout_questions" not in o]
    emis.configure(*corpus, "organisms.corpus.heldout_questions=40", f"paths.organisms={root}",
                   "steer.sampling.max_new_tokens=6", "steer.n_bootstrap=200")
    yield root
    emis.configure()


def test_the_readme_snippet_runs_verbatim(micro_api):
    pair = emis.load_pair("organism-llama")            # a conf/model entry, or emis.ModelPair(misaligned=..., aligned=..., base=None)
    acts = emis.capture(pair, emis.questions("organism_probe", n=200))   # .misaligned / .aligned / .base ActivationSets
    directions = emis.diff_in_means(acts.misaligned, acts.aligned)        # DirectionSet
    sep = emis.separation(acts.misaligned, acts.aligned)                  # per-layer results with intervals
    result = emis.steer(pair, directions, layer=1, alphas=[1.0],
                        questions=emis.questions("organism_heldout", n=40))   # reduction_points, ci95, p_values, verdict ...

    mis, al = acts.misaligned.activations.double().numpy(), acts.aligned.activations.double().numpy()
    np.testing.assert_allclose(directions.vectors.numpy(), mis.mean(0) - al.mean(0), rtol=1e-5, atol=1e-6)
    assert acts.base is not None and acts.misaligned.activations.shape[:2] == (200, pair.misaligned.n_layers)
    assert sep.layers == list(range(pair.misaligned.n_layers)) and all(0.0 <= a <= 1.0 for a in sep.accuracy)
    metrics = result.to_dict()
    assert metrics["model"] == "llama" and metrics["layers"] == [1] and metrics["alphas"] == [0.0, 1.0] and metrics["n_prompts"] == 40
    assert result.reduction_points == pytest.approx(100 * (metrics["unsteered_spillover"] - metrics["best"]["spillover"]))
    assert result.ci95[0] <= result.reduction_points <= result.ci95[1]
    assert set(result.p_values) == {"random", "shuffled_label", "wrong_layer", "wrong_layer_raw", "secure_vs_base"}
    assert result.verdict in ("specific", "not specific")
    assert len(metrics["controls"]["random"]["effects"]) == 60
    assert result.plot().axes  # a figure with its panels


def test_api_errors_are_one_clear_line(micro_api):
    with pytest.raises(ValueError, match="organism_probe"):
        emis.questions("probe", n=3)
    with pytest.raises(ValueError, match="evaluation questions"):
        emis.questions("organism_heldout", n=1000)
