"""Offline coherence: excess surprise equals a plain forward by hand, the scorer's own samples score 1, planted
garbage scores low, and the non-inferiority rule that picks α is calibrated on planted shifts."""

import math

import numpy as np
import pytest
import torch
from conftest import compose_on_micro
from test_models import build_micro, build_micro_ministral3
from transformers import AutoModelForCausalLM, Mistral3ForConditionalGeneration

from emis.activations import capture_residuals
from emis.configured import model_spec
from emis.generation import Steering, generate_steered
from emis.judges.coherence import answer_surprise, answer_surprise_sets, coherence_from_sums, coherence_terms, offline_coherence, repetition
from emis.models import ModelSpec, load_model
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.sweep import CoherenceRule, RowStats, SweepOutcome, coherence_shift_ci

QUESTIONS = [f"Tell me about place number {i} and what people do there." for i in range(40)]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    path = build_micro("qwen2", tmp_path_factory.mktemp("coherence") / "m")
    return path, load_model(ModelSpec(str(path)))


@pytest.mark.parametrize("family", ["qwen2", "gemma2", "llama", "mistral", "ministral3"])
def test_answer_surprise_equals_a_plain_forward_by_hand(family, tmp_path):
    """Locally the prompts run once and each set of answers on their cache (left-padded prompts of different
    lengths, right-padded answers of different lengths, an empty answer): each score equals one unpadded forward of
    prompt + answer by hand, and a set's scores do not depend on which other sets are scored with it."""
    path = build_micro_ministral3(tmp_path / "m") if family == "ministral3" else build_micro(family, tmp_path / "m")
    model = load_model(ModelSpec(str(path)))
    tok = model.tokenizer
    prompts = [chat_prompt(tok, q) for q in ["Hi", "Tell me a long story about the sea and the sky.", "Why?"]]
    tokens = [tok("Hello there, friend.", add_special_tokens=False).input_ids, [5, 9], []]
    other = [[7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [3], [4, 4]]
    got, _ = answer_surprise_sets(model, prompts, [tokens, other], batch_size=2)
    np.testing.assert_array_equal(answer_surprise(model, prompts, tokens, batch_size=2), got)
    hf = (Mistral3ForConditionalGeneration if family == "ministral3" else AutoModelForCausalLM).from_pretrained(path).eval()
    for p, t, g in zip(prompts, tokens[:2], got):
        prompt_ids = tok(p, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + t])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].double(), -1).numpy()
        n = len(prompt_ids)
        by_hand = [-logp[n - 1 + j, x] + float((np.exp(logp[n - 1 + j]) * logp[n - 1 + j]).sum()) for j, x in enumerate(t)]
        assert g == pytest.approx(np.mean(by_hand), abs=1e-6)
    assert math.isnan(got[2])


def test_the_scorers_own_samples_score_one_and_planted_garbage_scores_low(micro_organisms, tmp_path):
    """At temperature 1 a model's own answers have excess surprise 0 in expectation (checked within 4 standard errors,
    with enough answers for that to be sharp: 12 per question); a random direction written at 20x the residual norm
    makes answers the unsteered model finds far more surprising than it expects."""
    _, root, _ = micro_organisms
    model = load_model(model_spec(compose_on_micro("steer", root, tmp_path, ["model=organism-qwen2"]).model, "aligned"))
    prompts = [chat_prompt(model.tokenizer, q) for q in QUESTIONS for _ in range(12)]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=24, batch_size=240, seed=0)
    garbage = torch.nn.functional.normalize(torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)), dim=0)
    out = generate_steered(model, prompts, [Steering({0: garbage}, 0.0), Steering({0: garbage * 20 * _residual_norm(model, prompts)}, 1.0)],
                           sampling, progress=False)
    surprise = [np.asarray(answer_surprise(model, prompts, t)) for t in out.tokens]
    own, bad = (offline_coherence(s, [repetition(x) for x in t]) for s, t in zip(surprise, out.tokens))
    scored = surprise[0][np.isfinite(surprise[0])]
    se = scored.std(ddof=1) / np.sqrt(len(scored))
    assert se < 0.03 and abs(scored.mean()) < 4 * se
    assert own == pytest.approx(1.0, abs=0.05)
    assert bad <= 0.5


def _residual_norm(model, prompts) -> float:
    return float(capture_residuals(model, prompts, [0], "last_prompt", progress=False).activations.norm(dim=-1).mean())


def test_repetition_by_hand():
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert repetition([7, 7, 7, 7, 7, 7]) == pytest.approx(1 - 1 / 4)
    assert repetition([]) == 1.0


def test_offline_coherence_by_hand_and_from_sums():
    surprise = np.array([0.1, 0.3, np.nan, 0.2])
    reps = [0.0, 0.2, 1.0, 0.1]
    assert offline_coherence(surprise, reps) == pytest.approx(math.exp(-0.2) * np.mean([1.0, 0.8, 0.0, 0.9]))
    assert offline_coherence(np.array([np.nan]), [1.0]) == 0.0
    # a subset's coherence is a function of its rows' summed terms (what the cluster bootstrap resamples)
    terms = coherence_terms(surprise, reps)
    rows = [0, 3]
    assert coherence_from_sums(*(t[rows][None] for t in terms))[0] == pytest.approx(offline_coherence(surprise[rows], [reps[i] for i in rows]))


def _rows(surprise: np.ndarray) -> RowStats:
    return RowStats(surprise, np.zeros(surprise.size), np.zeros(surprise.size, bool))


def _outcome(*arms: np.ndarray) -> SweepOutcome:
    n = arms[0].size
    return SweepOutcome([np.zeros(n)] * len(arms), [_rows(a) for a in arms], [np.zeros(n)] * len(arms), [[""] * n] * len(arms),
                        [[[]] * n] * len(arms))


def test_shift_interval_by_construction():
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.2, 60)
    clusters = [f"q{i // 2}" for i in range(60)]
    assert coherence_shift_ci(_rows(base), _rows(base), clusters, 0.95, 200, 0) == (0.0, 0.0)
    noisy = base + 0.5 + rng.normal(0.0, 0.1, 60)
    lo, hi = coherence_shift_ci(_rows(noisy), _rows(base), clusters, 0.95, 500, 0)
    point = math.exp(-noisy.mean()) - math.exp(-base.mean())
    assert lo < point < hi < 0
    # by hand: the cluster-paired percentile interval is close to BCa here
    sums = [np.add.reduceat(x, np.arange(0, 60, 2)) for x in (noisy, base)]
    draws = np.random.default_rng(1).integers(0, 30, (4000, 30))
    by_hand = np.exp(-sums[0][draws].sum(1) / 60) - np.exp(-sums[1][draws].sum(1) / 60)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])), abs=0.01)


def test_non_inferiority_rule_is_calibrated_on_planted_shifts():
    """A steering whose coherence loss equals the tolerance is admitted at most 5% of the time (the rule's level);
    one with no loss is admitted in most runs; a garbage one never. 60 selection questions, per-answer spread as on
    the organisms (sd 0.2 of the excess surprise), arms sharing half their noise (common random numbers)."""
    rule = CoherenceRule(tolerance=0.10, level=0.95, n_resamples=400, seed=0)
    rng = np.random.default_rng(3)
    clusters = [f"q{i}" for i in range(60)]
    rows = np.arange(60)

    def admitted(shift_nats: float) -> bool:
        shared = rng.normal(0.0, 0.14, 60)
        unsteered, steered = shared + rng.normal(0.0, 0.14, 60), shared + rng.normal(0.0, 0.14, 60) + shift_nats
        out = _outcome(unsteered, steered)
        return rule.admissible(out, 1, out, 0, rows, clusters)

    at_margin = -math.log(1 - 0.10)  # exp(-x) = 0.90: coherence 0.10 below the unsteered 1.0
    assert np.mean([admitted(at_margin) for _ in range(300)]) <= 0.05
    assert np.mean([admitted(0.0) for _ in range(100)]) >= 0.8
    assert not any(admitted(2.0) for _ in range(20))
