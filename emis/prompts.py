"""Prompt sources: the EM study's question YAML, plain question lists, and the questions a run captures on or
answers (`capture.prompts`, `eval.prompts`): an organism source, a question file, or a Hugging Face dataset."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emis.chat import ChatFormatError, read_chat_jsonl


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


ORGANISM_SOURCES = ("organism_heldout", "organism_probe")  # drawn from the organisms' generator (emis.configured)
FILE_KINDS = {".txt": "one question per line", ".yaml": "a study question YAML", ".yml": "a study question YAML",
              ".jsonl": "a chat JSONL"}
HF_COLUMNS = ("question", "prompt", "text")  # the column an `hf:` source reads when it names none, first found first
SOURCES_HELP = (f"{' | '.join(ORGANISM_SOURCES)}, a .txt / .yaml / .jsonl question file, "
                "or hf:<dataset name or local folder>[:<split>[:<column>]]")


def file_questions(path: Path) -> list[str]:
    """Every question of a file, by its suffix: .txt lines (blank and '#' lines skipped), a study YAML's paraphrases
    (entry after entry, their system prompts not applied), a chat JSONL's user turns (conversation after conversation)."""
    if path.suffix == ".txt":
        return load_question_list(path)
    if path.suffix in (".yaml", ".yml"):
        return [p for q in load_question_yaml(path) for p in q.paraphrases]
    return [m.content for ex in read_chat_jsonl(path) for m in ex.messages if m.role == "user"]


def _first_line(err: BaseException) -> str:
    """An exception's first line (its type when it has no message), for one-line errors."""
    return next(iter(str(err).splitlines()), "") or type(err).__name__


def _hf_table(name: str, split: str, key: str):
    """The `split` of a dataset: a folder saved by `save_to_disk` (a saved Dataset, not DatasetDict, is its one
    split whatever `split` says), or anything `datasets.load_dataset` takes (a folder of data files, a hub id)."""
    import datasets  # imported here: loading it costs a second, and only `hf:` sources need it

    folder = Path(name).expanduser()
    try:
        if not ((folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()):
            return datasets.load_dataset(str(folder) if folder.exists() else name, split=split)
        table = datasets.load_from_disk(str(folder))
    except ValueError as err:  # load_dataset's unknown split: its message lists the dataset's splits
        raise ValueError(f"{key}=hf:{name}:{split}: {_first_line(err)}") from None
    except (ConnectionError, FileNotFoundError) as err:
        raise ValueError(f"{key}=hf:{name}: cannot load the dataset ({_first_line(err)}); give a local folder (saved by "
                         "save_to_disk, or of data files) or a hub id reachable from here") from None
    if not isinstance(table, datasets.DatasetDict):
        return table
    if split not in table:
        raise ValueError(f"{key}=hf:{name}:{split}: no split {split!r} (splits: {', '.join(table)}); "
                         "name one of them after the dataset")
    return table[split]


def hf_questions(spec: str, key: str) -> list[str]:
    """The non-empty strings of one column of a dataset, in its row order. `spec` is `<name>[:<split>[:<column>]]`:
    split `train` by default; column the first of `question`, `prompt`, `text` it has, else its first string column.
    `<name>` is a local folder when one exists there (saved by `Dataset.save_to_disk`, or holding data files such as
    train.jsonl), else a hub id."""
    name, split, column = (spec.split(":", 2) + ["", ""])[:3]
    if not name:
        raise ValueError(f"{key}=hf:{spec}: no dataset named; give hf:<name or local folder>[:<split>[:<column>]]")
    table = _hf_table(name, split or "train", key)
    strings = [c for c, f in table.features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    column = column or next((c for c in HF_COLUMNS if c in strings), strings[0] if strings else "")
    if column not in table.column_names:
        raise ValueError(f"{key}=hf:{spec}: no column {column!r} (columns: {', '.join(table.column_names)}); "
                         f"name the question column: hf:{name}:{split or 'train'}:<column>")
    return [str(v).strip() for v in table[column] if v is not None and str(v).strip()]


def source_questions(source: str, key: str) -> list[str]:
    """Every question of a file or dataset source (`key` is the setting that gave it, for errors), in its order."""
    if source.startswith("hf:"):
        questions = hf_questions(source[3:], key)
    else:
        path = Path(source).expanduser()
        if path.suffix not in FILE_KINDS:
            raise ValueError(f"{key}={source}: unknown prompt source; give {SOURCES_HELP}")
        if not path.is_file():
            raise ValueError(f"{key}={source}: no such file ({FILE_KINDS[path.suffix]} expected); fix the path")
        try:
            questions = file_questions(path)
        except (QuestionFileError, ChatFormatError) as err:
            raise ValueError(f"{key}={source}: {err}") from None
    if not questions:
        raise ValueError(f"{key}={source} holds no questions; add some, or give another source")
    return questions


def drawn(questions: list[str], n: int, seed: int, n_key: str) -> list[str]:
    """n of `questions`: all of them in their order when n is their number, else a seeded draw of n kept in
    their order; more than they hold is an error naming `n_key`."""
    if n > len(questions):
        raise ValueError(f"{n_key}={n} but the source holds {len(questions)} questions; set {n_key}<={len(questions)}")
    return [questions[i] for i in sorted(random.Random(seed).sample(range(len(questions)), n))]
