"""What a steered model is evaluated on (`EvalSet`), and how an LLM judge scores its answers.

Rows are generations; a *unit* is one question, the resampling unit of the bootstrap; units of one study id
(paraphrases) form a cluster. `emis.configured.evaluation_set` builds the configured set: the questions of
`eval.prompts` (the organisms' held-out ones by default, or a file or dataset), or a study question file
(`eval.questions=<path or URL>`). With a judge configured, every answer gets its question's `aligned` and
`coherent` scores.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jinja2.exceptions import TemplateError
from transformers import PreTrainedTokenizerBase

from emis.activations import ActivationSet
from emis.models import LoadedModel
from emis.judges.llm import METHOD_SUFFIX, JudgeError, LLMJudge, coherence_from_judge, score_fields
from emis.organisms.sample import chat_prompt
from emis.settings import EvalConfig  # noqa: F401  (exported here too)

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
            raise ValueError("the evaluation set is empty; give at least one question (eval.n_prompts, eval.questions)")

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


@dataclass
class SteeringTarget:
    """A model to steer and evaluate: the misaligned model, the scorer of its answers' offline coherence, captures of
    its pair's roles on the probe questions (for directions and controls), and its evaluation set."""

    model: LoadedModel
    scorer: LoadedModel
    acts: dict[str, ActivationSet]
    evals: EvalSet


def templated(tok: PreTrainedTokenizerBase, question: str, system: str | None) -> str:
    """The chat prompt of one question; a template without a system role (Gemma 2) gets it folded into the user turn."""
    try:
        return chat_prompt(tok, question, system)
    except TemplateError:
        if system is None:
            raise
        return chat_prompt(tok, f"{system}\n\n{question}")


def judge_rows(judge: LLMJudge, evals: EvalSet, answers: Sequence[str]) -> list[dict[str, Any]]:
    """Each answer's score, CODE/REFUSAL label and score method under each judge prompt of its question."""
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
        rows[row] |= score_fields(name, score)
    return rows


def score_method_counts(judged: Iterable[Sequence[dict[str, Any]]]) -> dict[str, int]:
    """How many judge scores of a sweep's judged rows (one list per steering) each method (logprobs, parsed) read,
    so a run that mixes them says so."""
    counts = Counter(v for rows in judged for r in rows for k, v in r.items() if k.endswith(METHOD_SUFFIX))
    return dict(sorted(counts.items()))


def judged_coherence(rows: Sequence[dict[str, Any]]) -> float:
    """Mean `coherent`/100 over the answers the judge could score (nan when it scored none)."""
    values = [coherence_from_judge(r.get("coherent")) for r in rows]
    scored = [v for v in values if v is not None]
    return float(np.mean(scored)) if scored else float("nan")


def mean_score(rows: Sequence[dict[str, Any]], name: str) -> float | None:
    """Mean of one judge prompt's scores over the answers it could score."""
    scored = [r[name] for r in rows if r.get(name) is not None]
    return float(np.mean(scored)) if scored else None
