"""Sampling of chat answers from a transformers model with common random numbers, stopping at the end-of-turn token
(`stop_token_ids`, the stop rule steered generation uses too)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase

from emis.crn import CommonNoiseSampler, row_keys
from emis.organisms.settings import SamplingConfig


def chat_prompt(tok: PreTrainedTokenizerBase, question: str, system: str | None = None) -> str:
    """The templated prompt that ends where the assistant's answer starts."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def stop_token_ids(model: Any, tok: PreTrainedTokenizerBase) -> list[int]:
    """The token ids that end an answer, one rule for every generation path: the generation config's eos id(s)
    (where a chat template's end-of-turn differs from eos, it is listed there) and the tokenizer's eos.
    `model`: a transformers model or its nnsight wrapper (both expose `generation_config`)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    return sorted(i for i in ids if i is not None)


def answer_ids(row: Sequence[int], stops: Sequence[int]) -> list[int]:
    """A generated row cut before its first stop token (what follows is padding)."""
    row = list(row)
    return next((row[:i] for i, t in enumerate(row) if t in stops), row)


@torch.no_grad()
def sample_answer_ids(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, questions: Sequence[str], cfg: SamplingConfig
) -> list[list[int]]:
    """One sampled answer's token ids per question, stop token excluded (left-padded batches; greedy at temperature 0).

    The noise of each answer is keyed by (cfg.seed, its prompt, its repeat index) (`emis.crn`), so an answer
    does not depend on the batch it was drawn in, and equals the unsteered row of a steered sweep."""
    prompts = [chat_prompt(tok, q) for q in questions]
    keys = row_keys(prompts, cfg.seed)
    stops = stop_token_ids(model, tok)
    answers: list[list[int]] = []
    for start in range(0, len(prompts), cfg.batch_size):
        enc = tok(prompts[start : start + cfg.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        width = enc.input_ids.shape[1]
        noise = [CommonNoiseSampler(keys[start : start + cfg.batch_size], width, cfg.temperature)] if cfg.temperature > 0 else []
        out = model.generate(
            **enc,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList(noise),
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id,
        )
        answers += [answer_ids(row, stops) for row in out[:, width:].tolist()]
    return answers


def sample_answers(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, questions: Sequence[str], cfg: SamplingConfig
) -> list[str]:
    """`sample_answer_ids` decoded, special tokens dropped (as steered generation decodes its answers)."""
    return [tok.decode(ids, skip_special_tokens=True) for ids in sample_answer_ids(model, tok, questions, cfg)]
