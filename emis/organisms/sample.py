"""Sampling of chat answers from a transformers model with common random numbers, stopping at the end-of-turn token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from emis.bounds import bounded
from emis.crn import CommonNoiseSampler, row_keys


@dataclass(frozen=True)
class SamplingConfig:
    """How answers are drawn (the study samples at temperature 1, top_p 1)."""

    temperature: float = bounded(ge=0)
    max_new_tokens: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    seed: int = bounded(ge=0)


def chat_prompt(tok: PreTrainedTokenizerBase, question: str, system: str | None = None) -> str:
    """The templated prompt that ends where the assistant's answer starts."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def sample_answers(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, questions: Sequence[str], cfg: SamplingConfig
) -> list[str]:
    """One sampled answer per question (left-padded batches; greedy when temperature is 0).

    The noise of each answer is keyed by (cfg.seed, its prompt, its repeat index) (`emis.crn`), so an answer
    does not depend on the batch it was drawn in, and equals the unsteered row of a steered sweep."""
    prompts = [chat_prompt(tok, q) for q in questions]
    keys = row_keys(prompts, cfg.seed)
    answers: list[str] = []
    for start in range(0, len(prompts), cfg.batch_size):
        enc = tok(prompts[start : start + cfg.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        width = enc.input_ids.shape[1]
        noise = [CommonNoiseSampler(keys[start : start + cfg.batch_size], width, cfg.temperature)] if cfg.temperature > 0 else []
        out = model.generate(
            **enc,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList(noise),
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        answers += tok.batch_decode(out[:, width:], skip_special_tokens=True)
    return answers
