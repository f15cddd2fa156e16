"""The shipped demo question set (spark_jax/data/demo_questions.jsonl) follows MMLU-Pro's schema."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources

import pytest

LETTERS = "ABCDEFGHIJ"
CATEGORIES = {
    "math", "physics", "chemistry", "law", "engineering", "other", "economics", "health",
    "psychology", "business", "biology", "philosophy", "computer science", "history",
}
KEYS = {"question_id", "question", "options", "answer", "answer_index", "cot_content", "category", "src"}
FINAL = re.compile(r"The answer is \(([A-J])\)\.$")


def _load() -> list[dict]:
    text = (resources.files("spark_jax.data") / "demo_questions.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


ROWS = _load()


def test_nonempty_and_every_line_is_an_object():
    assert len(ROWS) >= 14 * 3
    assert all(isinstance(r, dict) for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: str(r.get("question_id")))
def test_row_schema(row):
    assert set(row) == KEYS
    assert type(row["question_id"]) is int
    assert isinstance(row["question"], str) and row["question"].strip()
    opts = row["options"]
    assert isinstance(opts, list) and len(opts) == 10
    assert all(isinstance(o, str) and o.strip() for o in opts)
    assert len(set(opts)) == 10, "options must be distinct"
    assert not any(re.match(r"^\(?[A-J][).:]\s", o) for o in opts), "no letter prefixes inside options"
    assert row["answer"] in LETTERS and len(row["answer"]) == 1
    assert type(row["answer_index"]) is int and 0 <= row["answer_index"] <= 9
    assert LETTERS[row["answer_index"]] == row["answer"]
    assert row["category"] in CATEGORIES
    assert row["src"] == "spark-jax-demo"
    cot = row["cot_content"]
    assert isinstance(cot, str)
    m = FINAL.search(cot.strip())
    assert m is not None, "cot_content must end with 'The answer is (X).'"
    assert m.group(1) == row["answer"]


def test_ids_unique_and_consecutive_from_900001():
    ids = [r["question_id"] for r in ROWS]
    assert len(set(ids)) == len(ids)
    assert ids == list(range(900001, 900001 + len(ids)))


def test_every_category_has_at_least_three_questions():
    counts = Counter(r["category"] for r in ROWS)
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 3


def test_answer_letters_are_spread():
    counts = Counter(r["answer"] for r in ROWS)
    assert set(counts) == set(LETTERS), "every letter A..J is the answer somewhere"
    assert max(counts.values()) <= 9
