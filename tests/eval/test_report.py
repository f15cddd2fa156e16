"""A tiny end-to-end run of the report: files, tables, plots, reference rows."""

from __future__ import annotations

import json
import math

import pytest

from spark_jax.eval.report import PLOTS, load_reference_predictions, write_report

QUESTIONS = [
    {"question_id": 10, "category": "math", "answer": "A"},
    {"question_id": 11, "category": "law", "answer": "C"},
]


def _rows(model, correct, actions):
    return [{"question_id": q["question_id"], "category": q["category"], "model": model,
             "pred": q["answer"] if c else "J", "correct": c, "actions": a, "steps": len(a), "format_errors": 0}
            for q, c, a in zip(QUESTIONS, correct, actions)]


def test_report_files(tmp_path):
    ref_file = tmp_path / "ref.jsonl"
    ref_file.write_text('{"question_id": 10, "pred": "A"}\n{"question_id": 11, "pred": null}\n'
                        '{"question_id": 99, "pred": "B"}\n')
    rows = (_rows("base", [True, False], [["cot", "answer"], ["cot", "answer"]])
            + _rows("spark", [True, True], [["calculator", "answer"], ["search", "cot", "answer"]])
            + load_reference_predictions(ref_file, QUESTIONS, "llama-3.1-8b (5-shot CoT)"))
    summary = write_report(tmp_path / "out", rows, meta={"questions": 2})
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert report["systems"]["spark"]["accuracy"] == 1.0
    assert report["systems"]["base"]["entropy_bits"] == 0.0
    assert report["systems"]["spark"]["entropy_bits"] == pytest.approx(math.log2(3))
    assert report["systems"]["llama-3.1-8b (5-shot CoT)"]["accuracy"] == 0.5
    assert report["systems"]["llama-3.1-8b (5-shot CoT)"]["entropy_bits"] is None
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6
    md = (out / "report.md").read_text()
    assert "| spark | 2 | 100.0 | 1.58 |" in md and "| law |" in md
    for plot in PLOTS:
        assert (out / plot).stat().st_size > 5000
    assert summary == report["systems"]


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
