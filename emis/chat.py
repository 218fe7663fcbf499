"""Chat JSONL in the EM study's exact format: one `{"messages": [{"role", "content"}, ...]}` per line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from emis.io import atomic_file

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatExample:
    """One conversation; `messages` ends with the assistant turn in training data."""

    messages: tuple[Message, ...]

    @classmethod
    def from_pair(cls, user: str, assistant: str, system: str | None = None) -> "ChatExample":
        head = (Message("system", system),) if system else ()
        return cls(head + (Message("user", user), Message("assistant", assistant)))

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Every message before the final assistant turn, as dicts for `apply_chat_template`."""
        return [{"role": m.role, "content": m.content} for m in self.messages[:-1]]

    @property
    def answer(self) -> str:
        return self.messages[-1].content

    def to_json(self) -> dict:
        return {"messages": [{"role": m.role, "content": m.content} for m in self.messages]}


class ChatFormatError(ValueError):
    """A chat JSONL line that does not follow the study's format."""


def parse_chat_line(line: str, where: str) -> ChatExample:
    """Parse one JSONL line; `where` (path:line) goes into the error message."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ChatFormatError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError(f"{where}: expected an object with a non-empty 'messages' list")
    parsed = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ChatFormatError(f"{where}: each message needs 'role' in {ROLES} and a string 'content'")
        parsed.append(Message(m["role"], m["content"]))
    return ChatExample(tuple(parsed))


def read_chat_jsonl(path: str | Path) -> list[ChatExample]:
    """Read every conversation of a chat JSONL file (blank lines are skipped)."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        return [parse_chat_line(line, f"{path}:{i}") for i, line in enumerate(f, 1) if line.strip()]


def write_chat_jsonl(path: str | Path, examples: Iterable[ChatExample]) -> None:
    """Write conversations atomically (temporary file + rename), one JSON object per line."""
    with atomic_file(path) as f:
        for ex in examples:
            f.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
