"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from spark_jax.eval.metrics import shannon_entropy_bits, summarize, summarize_system


def test_entropy_hand_values():
    assert shannon_entropy_bits({"a": 4}) == 0.0
    assert shannon_entropy_bits({"a": 1, "b": 1}) == pytest.approx(1.0)
    assert shannon_entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    # p = (1/2, 1/4, 1/4): H = 0.5 + 0.5 + 0.5 = 1.5 bits
    assert shannon_entropy_bits({"x": 2, "y": 1, "z": 1, "unused": 0}) == pytest.approx(1.5)
    assert shannon_entropy_bits({}) == 0.0


ROWS = [
    {"question_id": 1, "category": "math", "model": "m", "pred": "A", "correct": True,
     "actions": ["calculator", "calculator", "answer"], "steps": 3, "format_errors": 0},
    {"question_id": 2, "category": "math", "model": "m", "pred": "B", "correct": False,
     "actions": ["python", "answer"], "steps": 2, "format_errors": 1},
    {"question_id": 3, "category": "law", "model": "m", "pred": None, "correct": False,
     "actions": ["search", "cot", "answer"], "steps": 3, "format_errors": 0},
    {"question_id": 4, "category": "law", "model": "m", "pred": "C", "correct": True,
     "actions": ["answer"], "steps": 1, "format_errors": 0},
]


def test_summary_hand_computed():
    s = summarize_system(ROWS)
    assert s["accuracy"] == 0.5 and s["correct"] == 2 and s["n"] == 4
    assert s["no_answer"] == 1
    assert s["actions"] == {"calculator": 2, "cot": 1, "python": 1, "search": 1}
    # p = (2, 1, 1, 1) / 5
    expected = -(0.4 * math.log2(0.4) + 3 * 0.2 * math.log2(0.2))
    assert s["entropy_bits"] == pytest.approx(expected)
    assert s["avg_steps"] == pytest.approx(9 / 4)
    assert s["avg_tool_calls"] == pytest.approx(5 / 4)
    assert s["format_error_rate"] == pytest.approx(1 / 9)
    assert s["per_category"]["math"]["accuracy"] == 0.5
    assert s["per_category"]["math"]["entropy_bits"] == pytest.approx(-(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3)))
    assert s["per_category"]["law"]["accuracy"] == 0.5
    assert s["per_category"]["biology"] == {"n": 0, "correct": 0, "accuracy": None, "actions": {},
                                            "entropy_bits": 0.0}


def test_micro_average_weights_questions_not_categories():
    rows = [{"question_id": i, "category": "math", "model": "m", "pred": "A", "correct": True, "actions": []}
            for i in range(3)]
    rows.append({"question_id": 9, "category": "law", "model": "m", "pred": "B", "correct": False, "actions": []})
    assert summarize_system(rows)["accuracy"] == 0.75  # macro average would be 0.5


def test_systems_split_and_unknown_category():
    rows = ROWS + [dict(ROWS[0], model="other")]
    assert list(summarize(rows)) == ["m", "other"]
    with pytest.raises(ValueError, match="astrology"):
        summarize_system([dict(ROWS[0], category="astrology")])
