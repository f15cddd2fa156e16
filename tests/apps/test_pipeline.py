"""The shared pipeline steps that need no model: a Stage 1 manifest's split and the systems list."""

from __future__ import annotations

import json

import pytest

from spark_jax.apps import pipeline

QUESTIONS = [{"question_id": i, "category": "math"} for i in range(5)]


def test_split_questions_follow_the_manifest_order_and_name_missing_ids(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"questions": {"train": [0, 4], "heldout": [3, 1]}}))
    manifest = pipeline.read_manifest(tmp_path)
    assert [q["question_id"] for q in pipeline.split_questions(manifest, QUESTIONS)] == [3, 1]
    assert [q["question_id"] for q in pipeline.split_questions(manifest, QUESTIONS, "train")] == [0, 4]
    with pytest.raises(ValueError, match=r"^q\.jsonl lacks 1 of the run's heldout question ids, e\.g\. \[9\]"):
        pipeline.split_questions({"questions": {"heldout": [1, 9]}}, QUESTIONS, source="q.jsonl")


def test_systems_put_base_first_and_skip_it_when_none(tmp_path):
    runs = {"SFT": tmp_path / "sft", "PPO": tmp_path / "ppo"}
    assert [n for n, _ in pipeline.systems(lambda: "base model", runs)] == ["base", "SFT", "PPO"]
    assert pipeline.systems(lambda: "base model", runs)[0][1]() == "base model"
    assert [n for n, _ in pipeline.systems(None, runs)] == ["SFT", "PPO"]
