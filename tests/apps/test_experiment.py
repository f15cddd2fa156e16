"""``spark-jax experiment`` end to end on a tiny model: two Stage 1 runs, four arms, both eval modes,
the table it writes, and a rerun that resumes (nothing is redone)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from spark_jax.apps import experiment
from spark_jax.apps.experiment import ExperimentConfig, arm_name, run_experiment
from tests.data.mmlu_fixtures import make_bank, write_jsonl


@pytest.mark.slow
def test_experiment_on_a_tiny_model_and_its_resume(tmp_path):
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "model")
    data = write_jsonl(tmp_path / "q.jsonl", make_bank({"math": 4, "law": 4, "physics": 4}))
    cfg = ExperimentConfig(model=str(model), data=str(data), train_questions=4, heldout_per_category=1,
                           rollout_steps=2, train_steps=2, batch_size=2, lora_rank=2, eval_steps=2,
                           max_tokens_tool=8, max_tokens_thought=8, max_tokens_answer=8, concurrency=4)
    out = tmp_path / "exp"
    table = run_experiment(cfg, out)
    assert "## Stage 1 training data" in table and "| lowest_viable | 4 |" in table and "| greedy | 4 |" in table
    for mode in ("score", "generate"):
        report = json.loads((out / f"report_{mode}" / "report.json").read_text())
        assert list(report["systems"]) == ["base", "SFT-greedy", "SFT-rarity", "PPO-rarity", "PPO-greedy"]
        assert all(s["n"] == 3 for s in report["systems"].values())
        assert f"## Held-out evaluation, {mode} mode" in table
    assert (out / "experiment.md").read_text() == table
    rows = [json.loads(x) for x in (out / "eval_score" / "base.jsonl").read_text().splitlines()]
    assert all(len(r["header_logprobs"]) >= 1 and len(r["header_logprobs"][0]) == 10 for r in rows)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "eval_generate").glob("*.jsonl")}
    run_experiment(cfg, out)  # resumes: Stage 1, training and evaluation rows are all kept
    assert {p: p.stat().st_mtime_ns for p in (out / "eval_generate").glob("*.jsonl")} == stamps
    metrics = (out / "train_ppo_greedy" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in metrics] == [1, 2]
    timings = json.loads((out / "timings.json").read_text())
    assert {"stage1_greedy_s", "train_ppo_greedy_s", "eval_generate_s"} <= set(timings)
    assert "Wall time (summed over resumed invocations): " in table

    # an evaluation stopped after its first chunk resumes there: the saved row is kept as it was
    base_rows = out / "eval_generate" / "base.jsonl"
    partial = out / "eval_generate" / "base.partial.jsonl"
    first = {**json.loads(base_rows.read_text().splitlines()[0]), "saved_before_the_stop": True}
    partial.write_text(json.dumps(first) + "\n")
    base_rows.unlink()
    run_experiment(cfg, out)
    again = [json.loads(x) for x in base_rows.read_text().splitlines()]
    assert len(again) == 3 and again[0] == first and not partial.exists()
    assert json.loads((out / "timings.json").read_text())["stage1_greedy_s"] >= timings["stage1_greedy_s"]

    # evaluate_base=false: the arms only; a missing base evaluation is not redone
    (out / "eval_score" / "base.jsonl").unlink()
    table = run_experiment(dataclasses.replace(cfg, evaluate_base=False), out)
    assert not (out / "eval_score" / "base.jsonl").exists() and "| base |" not in table
    report = json.loads((out / "report_score" / "report.json").read_text())
    assert list(report["systems"]) == ["SFT-greedy", "SFT-rarity", "PPO-rarity", "PPO-greedy"]


def test_experiment_config_validation():
    with pytest.raises(ValueError, match="arm 'ppo:least_used'"):
        ExperimentConfig(arms=("ppo:least_used",))
    with pytest.raises(ValueError, match="kl_coef"):
        ExperimentConfig(kl_coef=-0.1)
    cfg = ExperimentConfig(kl_coef=0.5)
    assert experiment.train_config(cfg, "ppo", "data").ppo.kl_coef == 0.5
    assert experiment.train_config(ExperimentConfig(), "ppo", "data").ppo.kl_coef == 0.05
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ExperimentConfig(arms=(), evaluate_base=False)
    with pytest.raises(ValueError, match="eval_modes"):
        ExperimentConfig(eval_modes=("judge",))
    assert arm_name("ppo:lowest_viable") == "PPO-rarity" and arm_name("sft:greedy") == "SFT-greedy"


def test_a_stopped_stage_still_records_its_time(tmp_path):
    timings = experiment._Timings(tmp_path / "timings.json")
    timings.add("train_sft_greedy_s", 5.0)
    with pytest.raises(KeyboardInterrupt):
        with timings.stage("train_sft_greedy_s"):
            time.sleep(0.05)
            experiment._interrupt(15, None)  # what a SIGTERM does to the command
    saved = json.loads((tmp_path / "timings.json").read_text())
    assert saved["train_sft_greedy_s"] >= 5.05
    assert experiment._Timings(tmp_path / "timings.json").totals(1.0)["all stages_s"] == saved["train_sft_greedy_s"]
