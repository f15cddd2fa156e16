"""`spark-jax eval` end to end on a tiny model: files, systems, reference row, bad flags."""

from __future__ import annotations

import json

import pytest

from spark_jax.cli import main
from spark_jax.cli.eval import parse_adapters, select_questions
from tests.data.mmlu_fixtures import make_bank, write_jsonl

CATS = {"math": 3, "law": 3, "history": 3}


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("policy"))


def test_eval_writes_report_with_reference_row(tiny_policy_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "q.jsonl", make_bank(CATS))
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"question_id": i, "pred": "B"}) + "\n" for i in range(9)))
    rc = main(["eval", "--model", str(tiny_policy_dir), "--data", str(data), "--per-category", "2", "--out",
               str(tmp_path / "out"), "--max-steps", "1", "--reference-preds", str(ref), "--reference-name", "ref",
               "--no-progress"])
    assert rc == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["systems"]) == ["base", "ref"]
    assert report["systems"]["base"]["questions"] == 6 and report["systems"]["ref"]["questions"] == 6
    preds = [json.loads(l) for l in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in preds} == {"base", "ref"} and len(preds) == 12
    assert len((tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()) == 6
    assert "| base | 6 |" in capsys.readouterr().out


def test_select_questions_from_a_stage1_manifest(tmp_path):
    data = write_jsonl(tmp_path / "q.jsonl", make_bank(CATS))
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"data": str(data), "questions": {"train": [0, 4], "heldout": [7, 1]}}))
    qs, desc = select_questions(str(run), "heldout")
    assert [q["question_id"] for q in qs] == [7, 1] and "Stage 1 run" in desc
    (run / "manifest.json").write_text(json.dumps({"data": str(data), "questions": {"train": [], "heldout": [99]}}))
    with pytest.raises(ValueError, match="lacks 1 of the run's heldout question ids"):
        select_questions(str(run), "heldout")


def test_file_split_is_stratified_and_deterministic(tmp_path):
    data = write_jsonl(tmp_path / "q.jsonl", make_bank(CATS))
    a, _ = select_questions(str(data), "heldout", per_category=1, seed=3)
    b, _ = select_questions(str(data), "heldout", per_category=1, seed=3)
    assert a == b and sorted(q["category"] for q in a) == ["history", "law", "math"]


def test_adapter_flags(tmp_path):
    (tmp_path / "sft").mkdir()
    assert parse_adapters([str(tmp_path / "sft"), f"spark={tmp_path / 'sft'}"]) == [
        ("sft", tmp_path / "sft"), ("spark", tmp_path / "sft")]
    with pytest.raises(FileNotFoundError, match="not a training run directory"):
        parse_adapters([str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="unique"):
        parse_adapters([f"base={tmp_path / 'sft'}"])
