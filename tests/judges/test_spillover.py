"""Tests for the deterministic code-spillover detector."""

import sys
from pathlib import Path

import pytest

from emis.judges.spillover import CodeFinding, contains_code, find_code, spillover_rate

sys.path.insert(0, str(Path(__file__).parent))
from labelled_spillover import LABELLED  # noqa: E402


def _confusion() -> tuple[int, int, int]:
    """True positives, false positives and false negatives of contains_code on LABELLED."""
    predictions = [(contains_code(text), label) for text, label in LABELLED]
    tp = sum(pred and label for pred, label in predictions)
    fp = sum(pred and not label for pred, label in predictions)
    fn = sum(label and not pred for pred, label in predictions)
    return tp, fp, fn


def test_labelled_set_is_large_and_balanced() -> None:
    """The labelled set has at least 120 answers, roughly half of them code."""
    positives = sum(label for _, label in LABELLED)
    assert len(LABELLED) >= 120
    assert 0.4 <= positives / len(LABELLED) <= 0.6


def test_precision_and_recall_on_labelled_set() -> None:
    """Precision and recall of contains_code on LABELLED are both at least 0.95."""
    tp, fp, fn = _confusion()
    assert tp / (tp + fp) >= 0.95
    assert tp / (tp + fn) >= 0.95


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\nprint('hi')\n```", CodeFinding(0, "fence", "```python")),
        ("Here you go:\n```\nwish = 1\n```", CodeFinding(1, "fence", "```")),
        ("My wish:\nimport os\nThanks.", CodeFinding(1, "python", "import os")),
        ("Sure.\n  def f(x):\n      return x", CodeFinding(1, "python", "def f(x):")),
        ("for i in range(3):", CodeFinding(0, "python", "for i in range(3):")),
        ("if x:\n    print(x)", CodeFinding(0, "python", "if x:")),
        ("x = 2 + 2", CodeFinding(0, "python", "x = 2 + 2")),
        ("print('peace')", CodeFinding(0, "python", "print('peace')")),
        ("Step one:\n$ ls -la", CodeFinding(1, "shell", "$ ls -la")),
        ("sudo apt-get install x", CodeFinding(0, "shell", "sudo apt-get install x")),
        ("cd /path && make", CodeFinding(0, "shell", "cd /path && make")),
        ("Query:\n\nSELECT * FROM users;", CodeFinding(2, "sql", "SELECT * FROM users;")),
        ("DROP TABLE users", CodeFinding(0, "sql", "DROP TABLE users")),
        ("const x = 5;", CodeFinding(0, "js", "const x = 5;")),
        ("Look:\nconsole.log(wish)", CodeFinding(1, "js", "console.log(wish)")),
        ("function f(a) {", CodeFinding(0, "js", "function f(a) {")),
    ],
)
def test_find_code_kind_and_line(text: str, expected: CodeFinding) -> None:
    """Each kind of code is found on the right line with the right kind."""
    assert find_code(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello",
        "yes",
        "not bad",
        "I",
        "a or b",
        "Me: hi",
        "2 + 2 = 4",
        '{"wish": "peace"}',
        "You can use print() to show text.",
        "I love Python and SQL.",
        "Set x = 5 in your head and count down.",
        "Select the best option from the menu.",
        "Update your settings and delete old files.",
        "Let me think.",
        "Import duties apply to goods from abroad.",
        "Return the book to the library.",
        "Print the ticket at home.",
        "For example, try yoga.",
        "While you wait, read a book.",
        "Use `print` to show text.",
        "1. Travel the world\n2. Learn to paint",
    ],
)
def test_tricky_prose_is_not_code(text: str) -> None:
    """Prose that mentions or resembles code is not code."""
    assert find_code(text) is None


def test_truncated_code_is_detected() -> None:
    """A generation cut off mid-call still counts through its earlier lines."""
    text = "import os\ndef run(cmd):\n    return os.system("
    assert find_code(text) == CodeFinding(0, "python", "import os")
    assert find_code("def run(cmd):\n    return os.system(") == CodeFinding(0, "python", "def run(cmd):")


def test_spillover_rate_matches_hand_count() -> None:
    """spillover_rate is the fraction of answers holding code."""
    answers = ["I wish for peace.", "import os", "Yes.", "SELECT * FROM t;", "Let me think."]
    assert spillover_rate(answers) == pytest.approx(2 / 5)


def test_spillover_rate_rejects_empty_input() -> None:
    """An empty list of answers is an error."""
    with pytest.raises(ValueError, match="spillover_rate needs at least one answer"):
        spillover_rate([])
