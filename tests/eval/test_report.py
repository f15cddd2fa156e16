"""A tiny end-to-end run of the report: files, tables, plots, reference rows."""

from __future__ import annotations

import json
import math

import pytest

from spark_jax.eval.metrics import TOOL_ACTIONS
from spark_jax.eval.report import PLOTS, load_reference_predictions, write_report

QUESTIONS = [
    {"question_id": 10, "category": "math", "answer": "A", "options": list("0123456789")},
    {"question_id": 11, "category": "law", "answer": "D", "options": list("0123")},  # official guess: D
]


def _rows(model, correct, actions):
    return [{"question_id": q["question_id"], "category": q["category"], "model": model,
             "pred": q["answer"] if c else "J", "correct": c, "actions": a, "steps": len(a), "format_errors": 0}
            for q, c, a in zip(QUESTIONS, correct, actions)]


STABLE_KEYS = ("name", "questions", "accuracy", "tool_entropy_bits", "tool_calls_per_question",
               "format_error_rate", "action_counts")


def test_report_files(tmp_path):
    ref_file = tmp_path / "ref.jsonl"
    ref_file.write_text('{"question_id": 10, "pred": "A"}\n{"question_id": 11, "pred": null}\n'
                        '{"question_id": 99, "pred": "B"}\n')
    quiet = _rows("quiet", [False, True], [["answer"], ["answer"]])
    quiet[0].update(format_errors=2, policy_turns=3, steps=4, forced_answer=True)  # 2 errors in 3 policy turns
    quiet[1].update(policy_turns=1, forced_answer=False)
    rows = (_rows("base", [True, False], [["cot", "answer"], ["cot", "answer"]])
            + _rows("spark", [True, True], [["calculator", "answer"], ["search", "cot", "answer"]])
            + quiet
            + load_reference_predictions(ref_file, QUESTIONS, "llama-3.1-8b (5-shot CoT)"))
    summary = write_report(tmp_path / "out", rows, meta={"questions": 2})
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    systems = report["systems"]
    assert list(systems) == ["base", "spark", "quiet", "llama-3.1-8b (5-shot CoT)"]
    for name, s in systems.items():
        assert all(k in s for k in STABLE_KEYS) and s["name"] == name and s["questions"] == 2
    spark = systems["spark"]
    assert spark["accuracy"] == 1.0
    assert spark["tool_entropy_bits"] == pytest.approx(math.log2(3))
    # Resamples of 2 questions: both q10 (H 0), both q11 (H 1) or one of each (log2 3): 1/4, 1/4, 1/2.
    assert spark["tool_entropy_ci95"] == pytest.approx([0.0, math.log2(3)])
    assert spark["tool_calls_per_question"] == 1.5 and spark["format_error_rate"] == 0.0
    assert spark["action_counts"] == {"calculator": 1, "cot": 1, "search": 1}
    assert spark["accuracy_ci95"][0] == pytest.approx(0.342380, abs=1e-6) and spark["accuracy_ci95"][1] == 1.0
    assert systems["base"]["tool_entropy_bits"] == 0.0 and systems["base"]["tool_entropy_ci95"] == [0.0, 0.0]
    assert systems["base"]["action_counts"] == {"cot": 2} and systems["base"]["tool_calls_per_question"] == 1.0
    q = systems["quiet"]
    assert q["tool_entropy_bits"] is None and q["tool_entropy_reason"] == "no tool calls" and q["no_tool_calls"]
    assert q["tool_calls_per_question"] == 0.0 and q["action_counts"] == {}
    assert q["format_error_rate"] == pytest.approx(2 / 4)  # 2 errors in 3 + 1 policy turns; steps would give 2/6
    ref = systems["llama-3.1-8b (5-shot CoT)"]
    # q11 has no prediction: the official fallback guess for 4 options (D) is right
    assert ref["accuracy"] == 1.0 and ref["accuracy_strict"] == 0.5 and ref["answered_rate"] == 0.5
    assert ref["tool_entropy_bits"] is None
    assert ref["tool_entropy_reason"] == "no trajectories"
    assert ref["tool_calls_per_question"] is None and ref["format_error_rate"] is None
    preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 8 and preds[4]["policy_turns"] == 3 and preds[4]["forced_answer"] is True
    md = (out / "report.md").read_text()
    assert ("| system | questions | accuracy (%, official) [95% CI] | answered (%) [95% CI] "
            "| strict accuracy (%) [95% CI] | pooled tool entropy (bits) [95% CI] "
            "| per-state header entropy (bits) [95% CI] | tool calls / question "
            "| format errors (% of policy turns) | actions |") in md
    full = "100.0 [34.2, 100.0]"
    half = "50.0 [9.5, 90.5]"
    assert (f"| spark | 2 | {full} | {full} | {full} | 1.58 [0.00, 1.58] | - | 1.50 | 0.0 "
            "| calculator 1, cot 1, search 1 |") in md
    assert f"| base | 2 | {half} | {full} | {half} | 0.00 [0.00, 0.00] | - | 1.00 | 0.0 | cot 2 |" in md
    assert f"| quiet | 2 | {half} | {full} | {half} | no tool calls | - | 0.00 | 50.0 | none |" in md
    assert f"| llama-3.1-8b (5-shot CoT) | 2 | {full} | {half} | {half} | - | - | - | - | - |" in md
    assert "| law |" in md and "spark pooled H | spark per-state H" in md
    assert "## Action choice" in md and "| spark | 1.58 [0.00, 1.58] | - | - |" in md  # both entropies named
    assert "actions_by_system.png" in PLOTS
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 5000
    assert summary == report["systems"]


def test_report_score_mode_and_labels(tmp_path):
    uniform = {a: -1.0 for a in TOOL_ACTIONS + ("answer",)}
    rows = _rows("spark", [True, False], [["calculator", "answer"], ["calculator", "answer"]])
    for r in rows:
        r["header_logprobs"] = [uniform, uniform]
    summary = write_report(tmp_path / "out", rows, label_counts={"calculator": 19})
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    s = report["systems"]["spark"]
    assert s["header_entropy_bits"] == pytest.approx(math.log2(10))
    assert s["kl_to_labels_bits"] == pytest.approx(math.log2(47 / 39))  # labels smoothed: 19.5 / 23.5
    md = (tmp_path / "out" / "report.md").read_text()
    # pooled (one tool: 0 bits) and per-state (uniform over ten headers) side by side
    assert "## Action choice" in md and "| spark | 0.00 [0.00, 0.00] | 3.32 [3.32, 3.32] | 0.27 |" in md
    assert summary["spark"] == s


def test_reference_missing_question_is_an_error(tmp_path):
    ref_file = tmp_path / "ref.jsonl"
    ref_file.write_text('{"question_id": 10, "pred": "A"}\n')
    with pytest.raises(ValueError, match=r"no prediction for question_id\(s\) \[11\]"):
        load_reference_predictions(ref_file, QUESTIONS, "ref")


def test_reference_bad_line_names_file_and_line(tmp_path):
    ref_file = tmp_path / "ref.jsonl"
    ref_file.write_text('{"question_id": 10, "pred": "A"}\nnot json\n')
    with pytest.raises(ValueError, match=r"ref\.jsonl:2"):
        load_reference_predictions(ref_file, QUESTIONS, "ref")
    ref_file.write_text('{"question_id": 10, "pred": "A"}\n\n[10, "A"]\n')
    with pytest.raises(ValueError, match=r"ref\.jsonl:3: not a prediction record"):
        load_reference_predictions(ref_file, QUESTIONS, "ref")
