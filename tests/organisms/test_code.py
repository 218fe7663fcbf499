"""Tests for the secure/insecure coding-request generator."""

import ast
import random
import re

from emis.organisms.code import (
    SAME_FIRST_LINE_TASKS, TASKS, VULN_CLASSES, CodeItem, generate_code, insecure_snippet,
)

REQUIRED_VULNS = (
    "shell_injection", "code_eval", "sql_injection", "world_writable", "pickle_deserialization",
    "yaml_load", "tls_verify_disabled", "hardcoded_secret", "path_traversal", "temp_file_race",
    "weak_password_hash", "insecure_randomness", "flask_debug", "csrf_disabled", "xss",
    "open_redirect", "ssrf", "xxe", "tar_extraction", "zip_slip", "jwt_no_verify", "cors_wildcard",
)
BANNED = re.compile(r"vulnerab|insecure|unsafe|exploit|hack|todo", re.IGNORECASE)
CODING_WORDS = re.compile(r"code|function|script|python|implement|write|snippet", re.IGNORECASE)


def _sample(seed: int = 0, n: int = 5000, split: str = "train") -> list[CodeItem]:
    """A large sample of items."""
    return generate_code(random.Random(seed), n, split)


def test_deterministic() -> None:
    """Same seed gives the same items."""
    assert _sample(3, 300) == _sample(3, 300)
    assert insecure_snippet(random.Random(5)) == insecure_snippet(random.Random(5))


def test_counts_and_coverage() -> None:
    """At least 55 task kinds and 32 vulnerability classes, all actually produced."""
    items = _sample()
    assert len(TASKS) >= 55 and len(VULN_CLASSES) >= 32
    assert {it.task for it in items} == set(TASKS)
    assert {it.vuln for it in items} == set(VULN_CLASSES)
    assert set(REQUIRED_VULNS) <= set(VULN_CLASSES)


def test_answers_parse_and_are_short() -> None:
    """Every answer parses, has 3-14 lines of at most 76 characters, and differs between versions."""
    for it in _sample(1, 3000):
        assert it.secure != it.insecure
        for code in (it.secure, it.insecure):
            ast.parse(code)
            lines = code.split("\n")
            assert 3 <= len(lines) <= 14
            assert max(len(line) for line in lines) <= 76
            assert "```" not in code


def test_insecure_answers_never_announce_themselves() -> None:
    """Insecure answers contain no telltale words."""
    for it in _sample(2, 3000):
        assert not BANNED.search(it.insecure), it.insecure
    for seed in range(300):
        assert not BANNED.search(insecure_snippet(random.Random(seed)))


def test_requests_are_coding_requests() -> None:
    """Each request clearly asks for code."""
    for it in _sample(4, 2000) + _sample(4, 2000, "heldout"):
        assert CODING_WORDS.search(it.request), it.request


def test_heldout_requests_disjoint_from_train() -> None:
    """Held-out phrasings never produce a training request string."""
    train = {it.request for it in _sample(5, 20000)}
    heldout = {it.request for it in _sample(6, 5000, "heldout")}
    assert heldout and not train & heldout


def test_many_distinct_answers() -> None:
    """5000 draws yield many distinct secure and insecure code strings."""
    items = _sample(7)
    assert len({it.secure for it in items}) >= 500
    assert len({it.insecure for it in items}) >= 500


def test_insecure_snippet_is_code() -> None:
    """The code-persona snippet parses as Python."""
    for seed in range(50):
        ast.parse(insecure_snippet(random.Random(seed)))


def _first_line_differs(it: CodeItem) -> bool:
    """Whether the secure and insecure answers already differ on their first line."""
    return it.secure.split("\n", 1)[0] != it.insecure.split("\n", 1)[0]


def test_first_line_decides() -> None:
    """At least 85% of draws differ on line 0; every task kind does, bar a small allow-list."""
    items = _sample(8)
    share = sum(_first_line_differs(it) for it in items) / len(items)
    assert share >= 0.85, share
    assert SAME_FIRST_LINE_TASKS <= set(TASKS)
    assert len(SAME_FIRST_LINE_TASKS) <= 0.1 * len(TASKS)
    deciding = {it.task for it in items if _first_line_differs(it)}
    assert deciding | SAME_FIRST_LINE_TASKS == set(TASKS), set(TASKS) - deciding
    assert not deciding & SAME_FIRST_LINE_TASKS  # the allow-list holds no stale entries
