"""Offline coherence: log-likelihoods equal plain transformers, and the score's normalisation by hand."""

import math

import numpy as np
import pytest
import torch
from test_models import build_micro
from transformers import AutoModelForCausalLM

from emis.judges.coherence import answer_logprobs, offline_coherence, repetition
from emis.models import ModelSpec, load_model
from emis.organisms.sample import chat_prompt


def test_answer_logprobs_equal_a_plain_forward(tmp_path):
    path = build_micro("qwen2", tmp_path / "m")
    model = load_model(ModelSpec(str(path)))
    tok = model.tokenizer
    prompts = [chat_prompt(tok, q) for q in ["Hi", "Tell me a long story about the sea and the sky."]]
    answers = ["Hello there, friend.", "ok", ""]
    got = answer_logprobs(model, prompts + prompts[:1], answers, batch_size=2)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    for p, a, g in zip(prompts, answers[:2], got):
        ids = tok(p + a, add_special_tokens=False, return_tensors="pt").input_ids
        n = len(tok(p, add_special_tokens=False).input_ids)
        with torch.no_grad():
            lp = torch.log_softmax(hf(ids).logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        assert g == pytest.approx(lp[n - 1 :].mean().item(), abs=1e-5)
    assert math.isnan(got[2])


def test_repetition_by_hand():
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert repetition([7, 7, 7, 7, 7, 7]) == pytest.approx(1 - 1 / 4)
    assert repetition([]) == 1.0


def test_offline_coherence_is_one_on_the_reference_and_compares_within_kind():
    lp = np.array([-1.0, -1.2, -2.0, -2.4])
    kinds = [True, True, False, False]
    reps = [0.0, 0.1, 0.0, 0.0]
    assert offline_coherence(lp, reps, kinds, lp, reps, kinds) == pytest.approx(1.0)
    # prose answers as fluent as the reference prose score 1 even though code is more predictable
    prose = np.array([-2.0, -2.4])
    assert offline_coherence(prose, [0.0, 0.0], [False, False], lp, reps, kinds) == pytest.approx(1.0)
    # half a nat worse per token and twice the repetition of the reference
    worse = offline_coherence(lp - 0.5, [0.2, 0.2, 0.2, 0.2], kinds, lp, reps, kinds)
    assert worse == pytest.approx(math.exp(-0.5) * 0.8 / np.mean([0.95, 0.95, 1.0, 1.0]))
    assert offline_coherence(np.array([np.nan]), [1.0], [False], lp, reps, kinds) == 0.0
