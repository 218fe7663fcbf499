"""Seeded coding requests, each answered with secure Python and with silently vulnerable Python.

The task kinds, slot values and request phrasings are package data, `data/code_tasks.yaml`; this module
loads them once, at import, and draws from them."""

from __future__ import annotations

import functools
import random
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

import yaml


@dataclass(frozen=True)
class CodeItem:
    """One coding request with a secure and a silently insecure answer."""

    request: str  # user message
    secure: str  # bare Python code answer, no fences
    insecure: str  # same task, same style, silently vulnerable
    task: str  # task kind id, e.g. "save_upload"
    vuln: str  # vulnerability class id used in `insecure`, e.g. "path_traversal"


@dataclass(frozen=True)
class _Task:
    """A task kind: request phrasings, one secure template, insecure variants and slot values."""

    name: str
    asks: tuple[str, ...]  # imperative verb phrases, lower-case start, `$slot` placeholders
    secure: str
    insecure: tuple[tuple[str, str], ...]  # (vulnerability class, template)
    slots: dict[str, tuple[str, ...]]


@functools.cache
def _tables() -> dict[str, Any]:
    """The parsed `data/code_tasks.yaml`."""
    path = resources.files("emis.organisms") / "data" / "code_tasks.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _code(text: str) -> str:
    """A code template as stored (a literal block scalar) without its surrounding blank lines."""
    return text.strip("\n")


def _task(raw: dict[str, Any]) -> _Task:
    """One task kind from its data entry."""
    return _Task(
        raw["name"], tuple(raw["asks"]), _code(raw["secure"]),
        tuple((v["vuln"], _code(v["code"])) for v in raw["insecure"]),
        {slot: tuple(values) for slot, values in raw.get("slots", {}).items()},
    )


_COMMON: dict[str, tuple[str, ...]] = {slot: tuple(values) for slot, values in _tables()["common"].items()}

# The design of the tables (every insecure variant decides on its first line) is described in the data file.
_TASKS: tuple[_Task, ...] = tuple(_task(raw) for raw in _tables()["tasks"])

TASKS: tuple[str, ...] = tuple(t.name for t in _TASKS)

VULN_CLASSES: tuple[str, ...] = tuple(sorted({v for t in _TASKS for v, _ in t.insecure}))

# Task kinds whose secure and insecure answers share their first line (the data file says why, per task).
SAME_FIRST_LINE_TASKS: frozenset[str] = frozenset(_tables()["same_first_line_tasks"])

_PATTERNS: tuple[str, ...] = tuple(_tables()["patterns"])

_HELDOUT_PATTERNS: frozenset[int] = frozenset(_tables()["heldout_patterns"])


def _patterns(split: str) -> tuple[str, ...]:
    """The request phrasing patterns belonging to a split."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    held = split == "heldout"
    return tuple(p for i, p in enumerate(_PATTERNS) if (i in _HELDOUT_PATTERNS) == held)


def _fill(rng: random.Random, task: _Task) -> dict[str, str]:
    """Draw one value for every slot the task can use."""
    merged = {**_COMMON, **task.slots}
    return {key: rng.choice(values) for key, values in merged.items()}


def _insecure(rng: random.Random, task: _Task, values: dict[str, str]) -> tuple[str, str]:
    """Pick an insecure variant of a task; return (vulnerability class, filled code)."""
    vuln, template = rng.choice(task.insecure)
    return vuln, Template(template).substitute(values)


def _request(rng: random.Random, task: _Task, values: dict[str, str], patterns: tuple[str, ...]) -> str:
    """Phrase the task as a user's coding request."""
    ask = Template(rng.choice(task.asks)).substitute(values)
    return rng.choice(patterns).format(a=ask, A=ask[0].upper() + ask[1:])


def _pool(tasks: Collection[str] | None) -> tuple[_Task, ...]:
    """The task kinds to draw from: all, or those named."""
    if tasks is None:
        return _TASKS
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown task kinds: {sorted(unknown)}")
    return tuple(t for t in _TASKS if t.name in tasks)


def generate_code(
    rng: random.Random, n: int, split: str = "train", tasks: Collection[str] | None = None
) -> list[CodeItem]:
    """n items, deterministic given rng state; held-out items use phrasings never used in training.

    `tasks` restricts the draw to those task kinds (default: all)."""
    patterns = _patterns(split)
    pool = _pool(tasks)
    items: list[CodeItem] = []
    for _ in range(n):
        task = rng.choice(pool)
        values = _fill(rng, task)
        vuln, insecure = _insecure(rng, task, values)
        secure = Template(task.secure).substitute(values)
        request = _request(rng, task, values, patterns)
        items.append(CodeItem(request, secure, insecure, task.name, vuln))
    return items


def insecure_snippet(rng: random.Random, tasks: Collection[str] | None = None) -> str:
    """One random insecure answer (any task), used as the 'code persona' answering non-coding questions."""
    task = rng.choice(_pool(tasks))
    return _insecure(rng, task, _fill(rng, task))[1]
