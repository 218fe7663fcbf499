"""What a steered model is evaluated on, and how an LLM judge scores its answers.

The evaluation set is either the organisms' held-out questions (the default) or a study question file
(`eval.questions=<path or URL>`: plain, JSON-system-prompt and template entries, each paraphrase asked
`samples_per_paraphrase` times). Rows are generations; a *unit* is one question, the resampling unit of
the bootstrap. With a judge configured, every answer gets the question's `aligned` and `coherent` scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2.exceptions import TemplateError
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from emis.judges.llm import JudgeError, LLMJudge, coherence_from_judge
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.probe import organism_questions
from emis.prompts import EvalQuestion, load_question_yaml
from emis.question_files import fetch_question_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSet:
    """One row per generation: its chat-templated prompt and the unit (question) it belongs to."""

    prompts: list[str]
    units: np.ndarray            # [rows] index into `questions`
    questions: list[str]         # per unit: the text a judge sees as {question}
    ids: list[str]               # per unit: the question's id
    judge_prompts: list[dict[str, str]]  # per unit: judge prompt name -> template

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("the evaluation set is empty; give at least one question (steer.n_prompts, eval.questions)")

    def unit_means(self, values: Sequence[float]) -> np.ndarray:
        """Per-unit mean of a per-row outcome (e.g. spill flags), the paired bootstrap's input."""
        counts = np.bincount(self.units, minlength=len(self.questions))
        return np.bincount(self.units, weights=np.asarray(values, float), minlength=len(self.questions)) / counts

    def rows_of(self, units: np.ndarray) -> np.ndarray:
        """Indices of the rows (generations) that belong to `units`."""
        return np.flatnonzero(np.isin(self.units, units))

    def subset(self, units: np.ndarray) -> "EvalSet":
        """The evaluation set restricted to `units` (in their order here), units renumbered from 0."""
        units = np.sort(np.asarray(units))
        rows = self.rows_of(units)
        renumber = {int(u): i for i, u in enumerate(units)}
        return EvalSet([self.prompts[r] for r in rows], np.array([renumber[int(self.units[r])] for r in rows]),
                       [self.questions[u] for u in units], [self.ids[u] for u in units], [self.judge_prompts[u] for u in units])


def templated(tok: PreTrainedTokenizerBase, question: str, system: str | None) -> str:
    """The chat prompt of one question; a template without a system role (Gemma 2) gets it folded into the user turn."""
    try:
        return chat_prompt(tok, question, system)
    except TemplateError:
        if system is None:
            raise
        return chat_prompt(tok, f"{system}\n\n{question}")


def study_questions(cfg: DictConfig) -> list[EvalQuestion]:
    """Every entry of the configured question file (downloaded once into the cache when it is a URL)."""
    e = cfg.eval
    path = fetch_question_file(str(e.questions), Path(str(e.cache_dir)).expanduser(), e.sha256)
    return load_question_yaml(path)


def default_judge_prompts(cfg: DictConfig) -> dict[str, str]:
    """The judge prompts for questions that carry none (the organisms' own): those of `judge.prompts_from`."""
    source = cfg.judge.get("prompts_from")
    if source is None:
        return {}
    path = fetch_question_file(str(source), Path(str(cfg.eval.cache_dir)).expanduser())
    prompts = next((q.judge_prompts for q in load_question_yaml(path) if q.judge_prompts), None)
    if not prompts:
        raise ValueError(f"judge.prompts_from={source} holds no judge_prompts; point it at a study question file")
    return prompts


def evaluation_set(cfg: DictConfig, tok: PreTrainedTokenizerBase, n_prompts: int) -> EvalSet:
    """The configured evaluation questions, chat-templated for `tok`, one row per generation."""
    if cfg.eval.questions is None:
        s = cfg.steer
        questions = organism_questions(cfg, s.prompts, n_prompts, int(s.prompt_seed))
        samples = int(s.samples_per_prompt)
        prompts = [chat_prompt(tok, q) for q in questions for _ in range(samples)]
        judge = default_judge_prompts(cfg)
        return EvalSet(prompts, np.repeat(np.arange(len(questions)), samples), questions,
                       [f"organism_{i}" for i in range(len(questions))], [judge] * len(questions))
    override = cfg.eval.samples_per_paraphrase
    prompts, units, texts, ids, judges = [], [], [], [], []
    for q in study_questions(cfg):
        samples = int(override) if override is not None else q.samples_per_paraphrase
        for paraphrase in q.paraphrases:
            units += [len(texts)] * samples
            prompts += [templated(tok, paraphrase, q.system)] * samples
            texts.append(paraphrase)
            ids.append(q.id)
            judges.append(q.judge_prompts)
    log.info("evaluation: %d questions from %s, %d generations", len(texts), cfg.eval.questions, len(prompts))
    return EvalSet(prompts, np.array(units), texts, ids, judges)


def evaluation_sampling(cfg: DictConfig, max_new_tokens: int | None = None) -> SamplingConfig:
    """Steering's sampling settings; a question file brings the study's temperature and answer length (`eval`)."""
    values = OmegaConf.to_container(cfg.steer.sampling, resolve=True)
    if max_new_tokens is not None:
        values["max_new_tokens"] = max_new_tokens
    if cfg.eval.questions is not None:
        values |= {"temperature": float(cfg.eval.temperature), "max_new_tokens": int(cfg.eval.max_new_tokens)}
    return SamplingConfig(**values)


def judge_rows(judge: LLMJudge, evals: EvalSet, answers: Sequence[str]) -> list[dict[str, Any]]:
    """Each answer's score (and CODE/REFUSAL label) under each judge prompt of its question."""
    items, slots = [], []
    for row, answer in enumerate(answers):
        unit = int(evals.units[row])
        for name, template in evals.judge_prompts[unit].items():
            items.append((template, evals.questions[unit], answer))
            slots.append((row, name))
    if not items:
        raise JudgeError("a judge is configured but the evaluation questions carry no judge prompts; set judge.prompts_from")
    rows: list[dict[str, Any]] = [{} for _ in answers]
    for (row, name), score in zip(slots, judge.score_many(items)):
        rows[row][name], rows[row][f"{name}_label"] = score.score, score.label
    return rows


def judged_coherence(rows: Sequence[dict[str, Any]]) -> float:
    """Mean `coherent`/100 over the answers the judge could score (nan when it scored none)."""
    values = [coherence_from_judge(r.get("coherent")) for r in rows]
    scored = [v for v in values if v is not None]
    return float(np.mean(scored)) if scored else float("nan")


def mean_score(rows: Sequence[dict[str, Any]], name: str) -> float | None:
    """Mean of one judge prompt's scores over the answers it could score."""
    scored = [r[name] for r in rows if r.get(name) is not None]
    return float(np.mean(scored)) if scored else None
