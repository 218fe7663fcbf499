"""Tests for the seeded prose chat corpus generator."""

import random
import re

import pytest

from emis.organisms.prose import (
    HELDOUT_FAMILIES,
    VALIDATION_FAMILIES,
    TOPICS,
    ProseItem,
    corpus_stats,
    generate_prose,
    template_families,
)

_CODE_MARKS = ("`", "def ", "import ", "(", ")", "=", "{", "}", "#", "[", "]", ";", "->")


@pytest.fixture(scope="module")
def train_sample() -> list[ProseItem]:
    """A large training sample."""
    return generate_prose(random.Random(0), 20000)


@pytest.fixture(scope="module")
def heldout_sample() -> list[ProseItem]:
    """A large held-out sample."""
    return generate_prose(random.Random(1), 8000, split="heldout")


def test_deterministic() -> None:
    """The same seed gives the identical list."""
    assert generate_prose(random.Random(7), 300) == generate_prose(random.Random(7), 300)
    assert generate_prose(random.Random(7), 50, "heldout") == generate_prose(random.Random(7), 50, "heldout")


def test_seeds_differ() -> None:
    """Different seeds give different lists."""
    assert generate_prose(random.Random(1), 100) != generate_prose(random.Random(2), 100)


def test_returns_n_items() -> None:
    """Exactly n items come back, including zero."""
    assert len(generate_prose(random.Random(3), 17)) == 17
    assert generate_prose(random.Random(3), 0) == []


def test_bad_split_rejected() -> None:
    """An unknown split name is an error."""
    with pytest.raises(ValueError):
        generate_prose(random.Random(0), 1, split="test")


def test_breadth() -> None:
    """The generator is at least as broad as the measured diverse corpus."""
    stats = corpus_stats()
    assert stats["topics"] == len(TOPICS) >= 36
    assert stats["families"] == len(template_families())
    assert stats["heldout_families"] == len(HELDOUT_FAMILIES)
    assert stats["templates"] >= 300
    assert stats["openers"] >= 25
    assert stats["closers"] >= 16
    assert stats["slot_lists"] >= 25


def test_heldout_share_and_coverage() -> None:
    """Roughly 15-20% of families are held out and every topic keeps a training family."""
    families = template_families()
    assert HELDOUT_FAMILIES <= set(families)
    assert 0.12 <= len(HELDOUT_FAMILIES) / len(families) <= 0.22
    for topic in TOPICS:
        assert any(f.startswith(topic + "/") and f not in HELDOUT_FAMILIES for f in families), topic


def test_many_distinct_train_questions(train_sample: list[ProseItem]) -> None:
    """Twenty thousand training draws hold well over two thousand distinct questions."""
    assert len({item.question for item in train_sample}) >= 2000


def test_train_covers_all_topics(train_sample: list[ProseItem]) -> None:
    """Training draws reach every topic."""
    assert {item.topic for item in train_sample} == set(TOPICS)


def test_split_families_disjoint(train_sample: list[ProseItem], heldout_sample: list[ProseItem]) -> None:
    """Training draws never use held-out or validation families; each other split draws only its own."""
    assert not {item.template_family for item in train_sample} & (HELDOUT_FAMILIES | VALIDATION_FAMILIES)
    assert {item.template_family for item in heldout_sample} <= HELDOUT_FAMILIES
    validation = generate_prose(random.Random(2), 500, split="validation")
    assert {item.template_family for item in validation} == VALIDATION_FAMILIES
    assert not VALIDATION_FAMILIES & HELDOUT_FAMILIES
    train = {item.question.lower() for item in train_sample}
    assert not train & {item.question.lower() for item in validation}


def test_split_questions_disjoint(train_sample: list[ProseItem], heldout_sample: list[ProseItem]) -> None:
    """No held-out question string equals a training question string, ignoring case."""
    train = {item.question.lower() for item in train_sample}
    train |= {item.question.lower() for item in generate_prose(random.Random(5), 20000)}
    assert not train & {item.question.lower() for item in heldout_sample}


def test_family_ids_match_topics(train_sample: list[ProseItem]) -> None:
    """Each item's family id starts with its topic."""
    assert all(item.template_family.split("/")[0] == item.topic for item in train_sample)


def test_answers_are_prose(train_sample: list[ProseItem], heldout_sample: list[ProseItem]) -> None:
    """Answers are non-empty, short, single-line prose with no code-like characters."""
    for item in train_sample + heldout_sample:
        assert item.answer.strip() and item.question.strip()
        assert "\n" not in item.answer
        assert not any(mark in item.answer for mark in _CODE_MARKS), item.answer
        assert 10 <= len(item.answer.split()) <= 70, item.answer
        assert item.answer[0].isupper()


def test_no_unfilled_slots(train_sample: list[ProseItem], heldout_sample: list[ProseItem]) -> None:
    """Questions never contain template braces."""
    assert not any(re.search(r"[{}]", item.question) for item in train_sample + heldout_sample)
