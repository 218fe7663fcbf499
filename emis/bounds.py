"""Allowed values of config keys, declared on the schema dataclasses' fields (`bounded(...)`) and checked on a
composed config before anything loads, so an out-of-range value fails in one line that names its key."""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Mapping, get_type_hints

METADATA_KEY = "emis_bound"


@dataclass(frozen=True)
class Bound:
    """What a numeric key (or each element of a list key) must satisfy: limits, `integer`, and `words` that may
    stand instead of a number (a layer spec's `all`, a monitor's layer `best`); or `choices` for a key whose values
    are named options."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    integer: bool = False
    words: tuple[str, ...] = ()

    def problem(self, value: Any) -> str | None:
        """Why `value` is not allowed, or None."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return next((p for p in (self._one(v) for v in value) if p), None)
        return self._one(value)

    def _one(self, value: Any) -> str | None:
        if self.choices is not None:
            return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}, got {value!r}"
        if isinstance(value, str) and value in self.words:
            return None
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            kind = "an integer" if self.integer else "a number"
            return f"must be {kind}{''.join(f' or {w!r}' for w in self.words)}, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value!r}"
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return None if ok else f"must be {self.describe()}, got {value!r}"

    def describe(self) -> str:
        """The allowed range in words, e.g. `> 0 and < 1`."""
        parts = [f"{op} {limit:g}" for op, limit in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if limit is not None]
        return " and ".join(parts)


def bounded(default: Any = MISSING, **bound: Any) -> Any:
    """A dataclass field whose values must satisfy `Bound(**bound)` (e.g. `n: int = bounded(ge=1)`)."""
    for key in ("choices", "words"):
        if key in bound:
            bound[key] = tuple(bound[key])
    meta = {METADATA_KEY: Bound(**bound)}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


def check_bounds(obj: Any, prefix: str = "") -> None:
    """Raise ValueError naming every field of the dataclass instance `obj` outside its bound (for `__post_init__`)."""
    problems = bound_problems({f.name: getattr(obj, f.name) for f in fields(obj)}, type(obj), prefix)
    if problems:
        raise ValueError("; ".join(problems))


def bound_problems(values: Mapping[str, Any], schema: type, prefix: str) -> list[str]:
    """`<key> <problem>` for every value of the (resolved) mapping outside its field's bound, nested schemas and
    mappings of schemas (e.g. per-family sizes) included."""
    hints = get_type_hints(schema)
    out: list[str] = []
    for f in fields(schema):
        if f.name not in values:
            continue
        value, key = values[f.name], f"{prefix}{f.name}"
        bound = f.metadata.get(METADATA_KEY)
        if bound is not None and (problem := bound.problem(value)):
            out.append(f"{key} {problem}")
        out += _nested(value, hints[f.name], key, f)
    return out


def _nested(value: Any, hint: Any, key: str, f: Field) -> list[str]:
    """Problems inside a nested schema (`hint` a dataclass) or a dict of them (`dict[str, <dataclass>]`)."""
    args = getattr(hint, "__args__", ())
    if len(args) == 2 and type(None) in args:  # Optional[<schema>]
        hint = next(a for a in args if a is not type(None))
        args = getattr(hint, "__args__", ())
    if is_dataclass(hint) and isinstance(value, Mapping):
        return bound_problems(value, hint, f"{key}.")
    if len(args) == 2 and is_dataclass(args[1]) and isinstance(value, Mapping):
        return [p for name, item in value.items() if isinstance(item, Mapping)
                for p in bound_problems(item, args[1], f"{key}.{name}.")]
    return []
