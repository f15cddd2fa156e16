"""Metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_jax.eval.metrics import (
    TOOL_ACTIONS,
    bootstrap_entropy_interval,
    format_error_rate,
    header_entropy_bits,
    kl_to_labels_bits,
    mean_header_entropy_bits,
    shannon_entropy_bits,
    summarize,
    summarize_system,
    wilson_interval,
)

STABLE_KEYS = ("name", "questions", "accuracy", "tool_entropy_bits", "tool_calls_per_question",
               "format_error_rate", "action_counts")


def test_entropy_hand_values():
    assert shannon_entropy_bits({"a": 4}) == 0.0
    assert shannon_entropy_bits({"a": 1, "b": 1}) == pytest.approx(1.0)
    assert shannon_entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    # p = (1/2, 1/4, 1/4): H = 0.5 + 0.5 + 0.5 = 1.5 bits
    assert shannon_entropy_bits({"x": 2, "y": 1, "z": 1, "unused": 0}) == pytest.approx(1.5)
    assert shannon_entropy_bits({}) == 0.0


def test_tool_actions_are_the_policys_nine_non_answer_choices():
    from spark_jax.protocol.prompts import candidate_actions

    assert TOOL_ACTIONS == candidate_actions()


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
    assert s["accuracy"] == 0.5 and s["correct"] == 2 and s["questions"] == 4
    assert s["no_answer"] == 1
    assert not {"n", "entropy_bits", "avg_tool_calls", "actions"} & set(s)  # only the per-category figures keep these
    assert s["action_counts"] == {"calculator": 2, "cot": 1, "python": 1, "search": 1}
    # p = (2, 1, 1, 1) / 5
    expected = -(0.4 * math.log2(0.4) + 3 * 0.2 * math.log2(0.2))
    assert s["tool_entropy_bits"] == pytest.approx(expected)
    assert s["tool_entropy_reason"] is None and s["no_tool_calls"] is False
    assert s["avg_steps"] == pytest.approx(9 / 4)
    assert s["tool_calls_per_question"] == pytest.approx(5 / 4)
    assert s["format_error_rate"] == pytest.approx(1 / 9)  # no forced answers: 9 policy turns
    assert s["per_category"]["math"]["accuracy"] == 0.5
    math_h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert s["per_category"]["math"]["entropy_bits"] == pytest.approx(math_h)
    assert s["per_category"]["law"]["accuracy"] == 0.5
    assert s["per_category"]["biology"] == {"n": 0, "correct": 0, "accuracy": None, "actions": {},
                                            "entropy_bits": None, "header_entropy_bits": None}
    assert s["accuracy_ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    lo, hi = s["tool_entropy_ci95"]
    assert 0 <= lo <= expected <= hi <= math.log2(4)
    assert s["header_entropy_bits"] is None and s["kl_to_labels_bits"] is None  # generate mode, no labels


def test_micro_average_weights_questions_not_categories():
    rows = [{"question_id": i, "category": "math", "model": "m", "pred": "A", "correct": True, "actions": []}
            for i in range(3)]
    rows.append({"question_id": 9, "category": "law", "model": "m", "pred": "B", "correct": False, "actions": []})
    assert summarize_system(rows)["accuracy"] == 0.75  # macro average would be 0.5


def test_systems_split_and_unknown_category():
    rows = ROWS + [dict(ROWS[0], model="other")]
    s = summarize(rows)
    assert list(s) == ["m", "other"]
    assert s["m"]["name"] == "m" and s["other"]["name"] == "other" and s["other"]["questions"] == 1
    assert all(k in s["m"] for k in STABLE_KEYS)
    with pytest.raises(ValueError, match="astrology"):
        summarize_system([dict(ROWS[0], category="astrology")])


def test_wilson_interval_hand_computed():
    z = 1.959963984540054
    k, n = 7, 10
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(center - half, abs=1e-6) and hi == pytest.approx(center + half, abs=1e-6)
    assert (lo, hi) == pytest.approx((0.396778, 0.892209), abs=1e-6)  # scipy binomtest(7, 10) wilson
    assert wilson_interval(0, 5)[0] == 0.0 and 0 < wilson_interval(0, 5)[1] < 0.5
    assert wilson_interval(5, 5)[1] == pytest.approx(1.0) and wilson_interval(0, 0) is None


def _question_counts(pattern, repeat):
    """[Q, A] counts: ``pattern`` (rows of per-question counts) repeated ``repeat`` times."""
    return np.tile(np.asarray(pattern, dtype=float), (repeat, 1))


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_questions():
    pattern = [[2, 0, 0], [0, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 3]]
    small, large = _question_counts(pattern, 4), _question_counts(pattern, 40)
    h = shannon_entropy_bits(small.sum(axis=0))
    lo_s, hi_s = bootstrap_entropy_interval(small)
    lo_l, hi_l = bootstrap_entropy_interval(large)
    assert lo_s < h < hi_s and lo_l < h < hi_l
    assert hi_s - lo_s > 2 * (hi_l - lo_l) > 0  # ~sqrt(10) narrower with 10x the questions
    assert bootstrap_entropy_interval(small, seed=3) == bootstrap_entropy_interval(small, seed=3)


def test_bootstrap_interval_is_degenerate_when_every_question_is_the_same():
    assert bootstrap_entropy_interval(_question_counts([[0, 2, 0]], 30)) == (0.0, 0.0)  # one action: H = 0
    lo, hi = bootstrap_entropy_interval(_question_counts([[1, 1, 0]], 30))  # every resample pools 1:1
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    assert bootstrap_entropy_interval(np.zeros((5, 3))) is None


def test_format_errors_count_policy_turns_only():
    forced = {"question_id": 1, "category": "math", "model": "m", "pred": "A", "correct": True,
              "actions": ["cot", "answer"], "steps": 4, "format_errors": 2, "forced_answer": True, "policy_turns": 3}
    assert format_error_rate([forced]) == pytest.approx(2 / 3)  # steps would give 2/4
    legacy = {k: v for k, v in forced.items() if k != "policy_turns"}
    assert format_error_rate([legacy]) == pytest.approx(2 / 3)  # steps - forced answer
    clean = dict(forced, format_errors=0, forced_answer=False, policy_turns=2, steps=2, actions=["answer"])
    assert format_error_rate([forced, clean]) == pytest.approx(2 / 5)
    assert summarize_system([forced, clean])["format_error_rate"] == pytest.approx(2 / 5)
    assert summarize_system([forced])["forced_answers"] == 1


def test_no_tool_calls_is_not_zero_entropy():
    rows = [dict(r, actions=["answer"]) for r in ROWS]
    s = summarize_system(rows)
    assert s["tool_entropy_bits"] is None and s["tool_entropy_ci95"] is None
    assert s["tool_entropy_reason"] == "no tool calls" and s["no_tool_calls"] is True
    assert s["tool_calls_per_question"] == 0.0 and s["action_counts"] == {}
    ref = summarize_system([dict(r, actions=None) for r in ROWS])
    assert ref["tool_entropy_bits"] is None and ref["tool_entropy_reason"] == "no trajectories"
    assert ref["no_tool_calls"] is False and ref["tool_calls_per_question"] is None
    assert ref["format_error_rate"] is None and ref["accuracy"] == 0.5


def test_header_entropy_hand_values():
    uniform = {a: -2.3 for a in TOOL_ACTIONS + ("answer",)}
    assert header_entropy_bits(uniform) == pytest.approx(math.log2(10))
    peaked = dict({a: -60.0 for a in uniform}, calculator=-0.1)
    assert 0 <= header_entropy_bits(peaked) < 1e-20
    # Per question first: (log2(10) / 2 + log2(10)) / 2, not the per-step mean 2/3 log2(10).
    rows = [dict(ROWS[0], header_logprobs=[uniform, peaked]), dict(ROWS[1], header_logprobs=[uniform]),
            dict(ROWS[2], header_logprobs=[])]
    assert mean_header_entropy_bits(rows) == pytest.approx(0.75 * math.log2(10))
    assert summarize_system(rows)["header_entropy_bits"] == pytest.approx(0.75 * math.log2(10))
    assert mean_header_entropy_bits(ROWS) is None


def test_kl_to_smoothed_labels():
    labels = {"calculator": 19, "answer": 100}  # smoothed: calculator 19.5 / 23.5, each other 0.5 / 23.5
    matching = dict({a: 1 for a in TOOL_ACTIONS}, calculator=39)  # 39 / 47 and 1 / 47
    assert kl_to_labels_bits(matching, labels) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_labels_bits({"calculator": 5}, labels) == pytest.approx(math.log2(47 / 39))
    assert kl_to_labels_bits({"cot": 1}, labels) == pytest.approx(math.log2(47))
    assert kl_to_labels_bits({}, labels) is None and kl_to_labels_bits({"cot": 1}, {}) is None
    s = summarize(ROWS, label_counts=labels)["m"]
    p = {"calculator": 0.4, "cot": 0.2, "python": 0.2, "search": 0.2}
    expected = sum(v * math.log2(v / ((labels.get(a, 0) + 0.5) / 23.5)) for a, v in p.items())
    assert s["kl_to_labels_bits"] == pytest.approx(expected) and expected > 0
    per_system = summarize(ROWS + [dict(ROWS[0], model="other")], label_counts={"other": {"calculator": 19}})
    assert per_system["m"]["kl_to_labels_bits"] is None
    assert per_system["other"]["kl_to_labels_bits"] == pytest.approx(math.log2(47 / 39))
    no_calls = summarize([dict(r, actions=["answer"]) for r in ROWS], label_counts=labels)["m"]
    assert no_calls["kl_to_labels_bits"] is None


# ---- MMLU-Pro's official scoring --------------------------------------------------------------

# Hand-computed from the official rule (evaluate_from_local.py, save_res): random.seed(12345), then
# random.randint(0, n - 1), re-seeded before every draw; the index per option count n is fixed.
OFFICIAL_GUESS = {2: "B", 3: "B", 4: "D", 5: "D", 6: "D", 7: "D", 8: "G", 9: "G", 10: "G"}


def test_official_guess_per_option_count():
    import random

    from spark_jax.eval.metrics import official_guess

    assert {n: official_guess(n) for n in OFFICIAL_GUESS} == OFFICIAL_GUESS
    state = random.getstate()
    for n in range(1, 11):  # the same draw as the official script's global generator
        random.seed(12345)
        assert official_guess(n) == "ABCDEFGHIJ"[random.randint(0, n - 1)]
    random.setstate(state)
    official_guess(10)
    assert random.getstate() == state  # the global generator is left alone
    with pytest.raises(ValueError, match="num_options"):
        official_guess(11)


def _q(qid, n, answer):
    return {"question_id": qid, "category": "math", "options": [f"o{i}" for i in range(n)], "answer": answer}


def test_official_accuracy_on_a_hand_computed_fixture():
    from spark_jax.eval.metrics import score_prediction

    # (question, extracted pred) -> official correct, strict correct
    cases = [
        (_q(1, 10, "G"), None, True, False),   # 10 options: the guess is G, right
        (_q(2, 10, "A"), None, False, False),  # guess G, wrong
        (_q(3, 4, "D"), None, True, False),    # 4 options: the guess is D, right
        (_q(4, 4, "G"), "", False, False),     # an empty prediction is unanswered too (guess D)
        (_q(5, 3, "B"), None, True, False),    # 3 options: guess B
        (_q(6, 8, "G"), None, True, False),    # 8 options: guess G
        (_q(7, 10, "C"), "C", True, True),     # extracted and right
        (_q(8, 10, "G"), "A", False, False),   # extracted and wrong: no guess
    ]
    rows = []
    for q, pred, official, strict in cases:
        scored = score_prediction(pred, q)
        assert (scored["correct"], scored["correct_strict"]) == (official, strict), q["question_id"]
        rows.append({"question_id": q["question_id"], "category": "math", "model": "m", "actions": None,
                     **scored})
    s = summarize_system(rows)
    assert s["accuracy"] == pytest.approx(5 / 8)        # 1, 3, 5, 6, 7
    assert s["accuracy_strict"] == pytest.approx(1 / 8)  # 7
    assert s["answered_rate"] == pytest.approx(2 / 8)    # 7, 8
    assert s["accuracy_ci95"] == pytest.approx(list(wilson_interval(5, 8)))
    assert s["answered_rate_ci95"] == pytest.approx(list(wilson_interval(2, 8)))
    assert s["accuracy_strict_ci95"] == pytest.approx(list(wilson_interval(1, 8)))


def test_old_rows_without_strict_fields_count_correct_as_strict():
    from spark_jax.eval.metrics import correct_strict

    assert correct_strict({"correct": True, "pred": "A"})
    assert not correct_strict({"correct": True, "pred": None})


def test_header_entropy_interval_brackets_the_mean():
    rows = [{"question_id": i, "category": "math", "model": "m", "pred": "A", "correct": True,
             "actions": ["answer"], "header_logprobs": [{"a": 0.0, "b": float(-i)}]} for i in range(6)]
    s = summarize_system(rows)
    lo, hi = s["header_entropy_ci95"]
    assert lo <= s["header_entropy_bits"] <= hi and lo < hi
