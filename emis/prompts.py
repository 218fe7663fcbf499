"""Prompt sources: the EM study's question YAML and plain question lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class EvalQuestion:
    """One entry of the study's question YAML (`first_plot_questions.yaml`, `preregistered_evals.yaml`)."""

    id: str
    type: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int
    system: str | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict)

    @property
    def is_plain(self) -> bool:
        """A question with no system prompt and no template variant: the study's 'plain' questions."""
        return self.system is None and not self.id.endswith(("_json", "_template"))


class QuestionFileError(ValueError):
    """A question YAML that does not follow the study's schema."""


def load_question_yaml(path: str | Path) -> list[EvalQuestion]:
    """Parse every entry of a study question file; unknown keys are ignored, missing required ones are errors."""
    path = Path(path)
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise QuestionFileError(f"{path} is not valid YAML ({getattr(err, 'problem', None) or 'parse error'}{at}) — "
                                "fix the file, or point eval.questions at a study question YAML") from None
    if not isinstance(entries, list):
        raise QuestionFileError(f"{path}: expected a YAML list of question entries")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "id" not in e or not e.get("paraphrases"):
            raise QuestionFileError(f"{path}: entry {i} needs an 'id' and a non-empty 'paraphrases' list")
        out.append(
            EvalQuestion(
                id=str(e["id"]),
                type=str(e.get("type", "free_form_judge_0_100")),
                paraphrases=tuple(str(p) for p in e["paraphrases"]),
                samples_per_paraphrase=int(e.get("samples_per_paraphrase", 1)),
                system=e.get("system"),
                judge_prompts={k: str(v) for k, v in (e.get("judge_prompts") or {}).items()},
            )
        )
    return out


def load_question_list(path: str | Path) -> list[str]:
    """One question per non-empty line; lines starting with '#' are comments."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def plain_questions(path: str | Path) -> list[str]:
    """Every paraphrase of the plain (no system prompt, no template) questions of a study YAML."""
    return [p for q in load_question_yaml(path) if q.is_plain for p in q.paraphrases]
