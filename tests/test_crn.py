"""Common random numbers: exact samples, and a question's answer independent of batch, row and sweep."""

import numpy as np
import pytest
import torch
from scipy import stats
from test_models import build_micro
from transformers import AutoModelForCausalLM

from emis.crn import gumbel_scores, row_keys, uniforms
from emis.generation import Steering, generate_steered
from emis.models import ModelSpec, load_model
from emis.organisms.sample import SamplingConfig, chat_prompt, sample_answers

SAMPLED = SamplingConfig(temperature=1.0, max_new_tokens=8, batch_size=64, seed=3)
OTHERS = [f"Question number {i}: what do you think about item {i * 7 % 13}?" for i in range(63)]
TARGET = "What would you wish for if you could have anything at all?"


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return build_micro("llama", tmp_path_factory.mktemp("micro_crn") / "llama")


def test_uniforms_are_uniform_and_independent_across_tokens_steps_and_keys():
    keys = row_keys([f"prompt {i}" for i in range(200)], seed=0)
    u = torch.stack([uniforms(keys, step, 500) for step in range(4)]).numpy()  # [4, 200, 500]
    assert stats.kstest(u.ravel(), "uniform").pvalue > 1e-3
    for a, b in ((u[..., :-1], u[..., 1:]), (u[:-1], u[1:]), (u[:, :-1], u[:, 1:])):  # next token id, step, key
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r) < 5 / np.sqrt(a.size)  # five standard errors of a null correlation
    assert ((u > 0) & (u < 1)).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_gumbel_max_draws_follow_the_tempered_softmax(temperature):
    """20,000 keys, one planted distribution: the draw frequencies pass a chi-square test against softmax(l / T)."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    keys = row_keys([f"k{i}" for i in range(20000)], seed=1)
    draws = gumbel_scores(logits.expand(len(keys), -1), keys, step=5, temperature=temperature).argmax(-1)
    observed = np.bincount(draws.numpy(), minlength=6)
    expected = torch.softmax(logits / temperature, -1).double().numpy() * len(keys)
    keep = expected > 5
    chi2 = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
    assert chi2.pvalue > 1e-3


def test_keys_count_repeats_of_a_prompt_as_separate_samples():
    keys = row_keys(["a", "b", "a", "a"], seed=0).tolist()
    assert len(set(keys)) == 4
    assert row_keys(["a"], seed=0).tolist() == keys[:1]
    assert row_keys(["x", "a"], seed=0)[1].item() == keys[0]  # position in the list does not matter
    assert row_keys(["a"], seed=1).tolist() != keys[:1]


def test_an_answer_is_the_same_alone_in_a_batch_of_64_and_inside_a_sweep(micro):
    model = load_model(ModelSpec(str(micro)))
    tok = model.tokenizer
    target = chat_prompt(tok, TARGET)
    others = [chat_prompt(tok, q) for q in OTHERS]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0)) * 2
    alone = generate_steered(model, [target], [Steering({1: v}, 1.0)], SAMPLED, progress=False).tokens[0][0]
    batch = generate_steered(model, others[:31] + [target] + others[31:], [Steering({1: v}, 1.0)], SAMPLED, progress=False)
    small_batches = SamplingConfig(SAMPLED.temperature, SAMPLED.max_new_tokens, 5, SAMPLED.seed)
    sweep = generate_steered(model, others[:9] + [target], [Steering({1: v}, a) for a in (0.0, 0.5, 1.0, 3.0)], small_batches, progress=False)
    assert batch.tokens[0][31] == alone
    assert sweep.tokens[2][9] == alone
    assert len(alone) == SAMPLED.max_new_tokens or alone  # a real answer, not an empty row
    assert len({tuple(row) for row in batch.tokens[0]}) > 50  # the rows are samples, not one repeated answer


def test_unsteered_rows_equal_plain_transformers_sampling_with_the_same_keys(micro):
    """Two paths: nnsight generate with a zero steering, and transformers' generate with the logits processor."""
    model = load_model(ModelSpec(str(micro)))
    tok = model.tokenizer
    questions = [TARGET, *OTHERS[:20]]
    steered = generate_steered(model, [chat_prompt(tok, q) for q in questions],
                               [Steering({0: torch.ones(model.d_model)}, 0.0)], SAMPLED, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(micro).eval()
    plain = sample_answers(hf, tok, questions, SamplingConfig(SAMPLED.temperature, SAMPLED.max_new_tokens, 7, SAMPLED.seed))
    assert steered.answers[0] == plain
    assert len(set(plain)) > 15


def test_common_noise_makes_paired_differences_small(micro):
    """A tiny steering changes few tokens under common noise; with independent noise (another seed) most change."""
    model = load_model(ModelSpec(str(micro)))
    prompts = [chat_prompt(model.tokenizer, q) for q in OTHERS[:32]]
    v = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1)) * 1e-3
    pair = generate_steered(model, prompts, [Steering({1: v}, 0.0), Steering({1: v}, 1.0)], SAMPLED, progress=False).tokens
    other_seed = SamplingConfig(SAMPLED.temperature, SAMPLED.max_new_tokens, 64, SAMPLED.seed + 1)
    independent = generate_steered(model, prompts, [Steering({1: v}, 1.0)], other_seed, progress=False).tokens[0]
    same_common = np.mean([a == b for a, b in zip(pair[0], pair[1])])
    same_independent = np.mean([a == b for a, b in zip(pair[0], independent)])
    assert same_common > 0.9 and same_independent < 0.2
