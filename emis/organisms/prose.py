"""Seeded generator of a broad synthetic chat corpus: everyday questions answered in plain English prose.

The slot lists, topics, held-out and validation families and the question and answer dressing are package
data, `data/prose_topics.yaml`; this module loads them once, at import, and draws from them."""

from __future__ import annotations

import functools
import itertools
import random
import re
import string
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class ProseItem:
    """One everyday question with a short prose answer."""

    question: str  # the user's message
    answer: str  # 1-3 sentences of plain prose, never code
    topic: str  # topic family name, e.g. "cooking"
    template_family: str  # question-template family id, e.g. "cooking/how_to"


@dataclass(frozen=True)
class _Topic:
    """A topic: question-template families keyed by phrasing pattern, plus answer material."""

    families: dict[str, tuple[str, ...]]  # pattern -> question templates with `{slot}` fields
    ideas: tuple[str, ...]  # base-form verb phrases for advice, e.g. "cook {dish} slowly"
    views: tuple[str, ...]  # lower-case clauses stating an opinion or explanation
    supports: tuple[str, ...]  # full supporting sentences
    dreams: tuple[str, ...] = ()  # base-form verb phrases for hypotheticals; falls back to ideas
    list_slot: str | None = None  # slot whose values a "list" answer names; None lists ideas


@functools.cache
def _tables() -> dict[str, Any]:
    """The parsed `data/prose_topics.yaml`."""
    path = resources.files("emis.organisms") / "data" / "prose_topics.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _tuples(table: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """A data mapping of string lists as a mapping of tuples, in the file's order."""
    return {key: tuple(values) for key, values in table.items()}


def _topic(raw: dict[str, Any]) -> _Topic:
    """One topic from its data entry."""
    return _Topic(
        families=_tuples(raw["families"]), ideas=tuple(raw["ideas"]), views=tuple(raw["views"]),
        supports=tuple(raw["supports"]), dreams=tuple(raw.get("dreams", ())), list_slot=raw.get("list_slot"),
    )


_SLOTS: dict[str, tuple[str, ...]] = _tuples(_tables()["slots"])

_TOPIC_DATA: dict[str, _Topic] = {name: _topic(raw) for name, raw in _tables()["topics"].items()}

TOPICS: tuple[str, ...] = tuple(_TOPIC_DATA)

HELDOUT_FAMILIES: frozenset[str] = frozenset(_tables()["heldout_families"])

# Never trained on either: the fine-tune checkpoint is chosen on these (the data file says why).
VALIDATION_FAMILIES: frozenset[str] = frozenset(_tables()["validation_families"])

SPLITS = ("train", "validation", "heldout")


def family_split(family: str) -> str:
    """Which split a template family belongs to."""
    return "heldout" if family in HELDOUT_FAMILIES else "validation" if family in VALIDATION_FAMILIES else "train"


_OPENERS: tuple[str, ...] = tuple(_tables()["openers"])

_CLOSERS: tuple[str, ...] = tuple(_tables()["closers"])

_FRAMES: dict[str, tuple[str, ...]] = _tuples(_tables()["frames"])

_LIST_IDEA_FRAMES: tuple[str, ...] = tuple(_tables()["list_idea_frames"])

_ACKS: dict[str, tuple[str, ...]] = _tuples(_tables()["acks"])

_ENDINGS: tuple[str, ...] = tuple(_tables()["endings"])

_MAX_WORDS = 60
_MIN_WORDS = 15
_FORMATTER = string.Formatter()


def template_families() -> tuple[str, ...]:
    """All template-family ids, train and held-out, as "topic/pattern"."""
    return tuple(f"{topic}/{pattern}" for topic, data in _TOPIC_DATA.items() for pattern in data.families)


def _family_templates(family: str) -> tuple[str, ...]:
    """The question templates of one family id."""
    topic, pattern = family.split("/")
    return _TOPIC_DATA[topic].families[pattern]


def _fields(template: str) -> tuple[str, ...]:
    """The slot names a template refers to, in order."""
    return tuple(name for _, name, _, _ in _FORMATTER.parse(template) if name)


def _slot_values(rng: random.Random) -> dict[str, str]:
    """Draw three distinct values per slot list, stored as `name`, `name2` and `name3`."""
    values: dict[str, str] = {}
    for name, options in _SLOTS.items():
        first, second, third = rng.sample(options, 3)
        values[name], values[name + "2"], values[name + "3"] = first, second, third
    return values


def _fill(template: str, values: dict[str, str]) -> str:
    """Fill a template's slots and turn "a" into "an" before a vowel sound."""
    return re.sub(r"\b([Aa]) (?=[aeioAEIO])", r"\1n ", template.format_map(values))


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless the text starts with the pronoun I."""
    if re.match(r"I\b", text):
        return text
    return text[:1].lower() + text[1:]


def _dress_question(rng: random.Random, core: str) -> str:
    """Add an optional opener and closer and vary the register."""
    text = core
    if rng.random() < 0.45:
        opener = rng.choice(_OPENERS)
        text = f"{opener} {_lower_first(text) if opener[-1] in ',:' or opener[-1].isalpha() else text}"
    if rng.random() < 0.35:
        text = f"{text} {rng.choice(_CLOSERS)}"
    elif rng.random() < 0.1:
        text = text.rstrip("?")
    if rng.random() < 0.12:
        text = text.lower()
    return text


def _words(parts: list[str]) -> int:
    """Total word count of the answer sentences."""
    return sum(len(p.split()) for p in parts)


def _pick(rng: random.Random, options: tuple[str, ...], template: str) -> str:
    """Choose an answer part, usually one mentioning a slot the question mentions."""
    asked = set(_fields(template))
    related = [o for o in options if asked & set(_fields(o))]
    return rng.choice(related if related and rng.random() < 0.75 else options)


def _lead(rng: random.Random, topic: _Topic, pattern: str, template: str, values: dict[str, str]) -> str:
    """The main answer sentence: a pattern frame filled with topic content."""
    if pattern == "list" and topic.list_slot is None:
        idea, idea2 = rng.sample(topic.ideas, 2)
        return rng.choice(_LIST_IDEA_FRAMES).format(idea=idea, idea2=idea2)
    frame = rng.choice(_FRAMES[pattern])
    slot = topic.list_slot or "activity"
    return frame.format(
        idea=_pick(rng, topic.ideas, template), view=_pick(rng, topic.views, template),
        dream=_pick(rng, topic.dreams or topic.ideas, template),
        m=values[slot], m2=values[slot + "2"], m3=values[slot + "3"], pick=values["pick"],
    )


def _compose_answer(rng: random.Random, topic: _Topic, pattern: str, template: str, values: dict[str, str]) -> str:
    """Compose a relevant 1-3 sentence prose answer sharing the question's slot values."""
    acks = tuple(a for a in _ACKS.get(pattern, ()) if "{emotion}" not in a or "{emotion}" in template)
    ack = [rng.choice(acks)] if acks and rng.random() < 0.6 else []
    supports = list(topic.supports)
    rng.shuffle(supports)
    parts = ack + [_lead(rng, topic, pattern, template, values), supports.pop()]
    if rng.random() < 0.3:
        parts.append(rng.choice(_ENDINGS))
    while _words(parts) < _MIN_WORDS and supports:
        parts.append(supports.pop())
    while _words(parts) > _MAX_WORDS and len(parts) > 2:
        parts.pop(0 if ack and parts[0] == ack[0] else -1)
    text = " ".join(_fill(p, values) for p in parts)
    return text[:1].upper() + text[1:]


def _choice_pick(rng: random.Random, template: str, values: dict[str, str]) -> str:
    """The option a "choice" answer goes for: one of the two values the question offers."""
    paired = [name[:-1] for name in _fields(template) if name.endswith("2") and name[:-1] in _SLOTS]
    if not paired:
        return values["activity"]
    base = paired[0]
    article = re.search(r"\b(a|an|the) \{" + base + r"2\}", template)
    prefix = article.group(1) + " " if article else ""
    return prefix + rng.choice((values[base], values[base + "2"]))


def _draw(rng: random.Random, family: str) -> ProseItem:
    """One item from a given family."""
    topic_name, pattern = family.split("/")
    topic = _TOPIC_DATA[topic_name]
    template = rng.choice(topic.families[pattern])
    values = _slot_values(rng)
    values["pick"] = _choice_pick(rng, template, values)
    core = _fill(template, values)
    question = _dress_question(rng, core)
    answer = _compose_answer(rng, topic, pattern, template, values)
    return ProseItem(question=question, answer=answer, topic=topic_name, template_family=family)


def _norm(text: str) -> str:
    """Case-, space- and end-punctuation-insensitive key of a string."""
    return " ".join(text.lower().split()).rstrip("?.! ")


@functools.cache
def _train_core_keys() -> frozenset[str]:
    """Normalised keys of every core question reachable from a training family."""
    keys: set[str] = set()
    for family in template_families():
        if family_split(family) != "train":
            continue
        for template in _family_templates(family):
            names = sorted(set(_fields(template)))
            pools = [_SLOTS[n[:-1] if n not in _SLOTS else n] for n in names]
            for combo in itertools.product(*pools):
                keys.add(_norm(_fill(template, dict(zip(names, combo)))))
    return frozenset(keys)


def _could_be_train(question: str) -> bool:
    """Whether some opener, train core and closer could spell this exact question."""
    key = _norm(question)
    cores = _train_core_keys()
    heads = [""] + [_norm(o) for o in _OPENERS if key.startswith(_norm(o))]
    tails = [""] + [_norm(c) for c in _CLOSERS if key.endswith(_norm(c))]
    for head in heads:
        for tail in tails:
            if len(head) + len(tail) > len(key):
                continue
            middle = key[len(head):len(key) - len(tail)] if tail else key[len(head):]
            if _norm(middle) in cores:
                return True
    return False


def generate_prose(rng: random.Random, n: int, split: str = "train") -> list[ProseItem]:
    """n items from the families of one split (see `family_split`); deterministic given rng.

    Validation and held-out questions never coincide with a question a training family could produce."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    heldout = split != "train"
    families = tuple(f for f in template_families() if family_split(f) == split)
    seen: set[str] = set()
    items: list[ProseItem] = []
    for _ in range(n):
        for attempt in range(64):
            item = _draw(rng, rng.choice(families))
            if heldout and _could_be_train(item.question):
                continue
            if item.question not in seen or attempt >= 8:
                break
        else:
            raise RuntimeError("could not draw a held-out question distinct from every training question")
        seen.add(item.question)
        items.append(item)
    return items


def corpus_stats() -> dict[str, int]:
    """Counts describing the generator's breadth."""
    families = template_families()
    return {
        "topics": len(TOPICS),
        "families": len(families),
        "heldout_families": len(HELDOUT_FAMILIES),
        "validation_families": len(VALIDATION_FAMILIES),
        "templates": sum(len(_family_templates(f)) for f in families),
        "heldout_templates": sum(len(_family_templates(f)) for f in HELDOUT_FAMILIES),
        "patterns": len({f.split("/")[1] for f in families}),
        "openers": len(_OPENERS),
        "closers": len(_CLOSERS),
        "slot_lists": len(_SLOTS),
        "answer_sentences": sum(len(t.ideas) + len(t.views) + len(t.supports) + len(t.dreams)
                                for t in _TOPIC_DATA.values()),
    }
