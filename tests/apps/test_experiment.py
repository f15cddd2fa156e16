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
        assert all(s["questions"] == 3 for s in report["systems"].values())
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


def test_a_running_stage_keeps_its_time_so_far_on_disk(tmp_path):
    """A SIGKILL runs no ``finally``: the attempt it cuts short must already be in timings.json,
    within one tick, while the stage runs."""
    path = tmp_path / "timings.json"
    timings = experiment._Timings(path, tick_s=0.02)
    timings.add("eval_score_s", 5.0)
    with timings.stage("eval_score_s"):
        deadline = time.monotonic() + 10.0
        while json.loads(path.read_text())["eval_score_s"] < 5.1 and time.monotonic() < deadline:
            time.sleep(0.02)
        on_disk = json.loads(path.read_text())["eval_score_s"]  # what a kill here would leave
        assert 5.1 <= on_disk < 15.0
    after = json.loads(path.read_text())["eval_score_s"]
    assert after >= on_disk and after == timings.seconds["eval_score_s"]
    with pytest.raises(ValueError, match="tick_s"):
        experiment._Timings(path, tick_s=0)


def test_the_command_records_each_invocation_under_its_table(tmp_path, monkeypatch):
    """``spark-jax experiment`` appends start and end lines to invocations.jsonl and states every
    invocation's commit and wall time under the table, a stopped one included."""
    from spark_jax.cli import main
    from spark_jax.core.provenance import read_invocations

    calls = []

    def fake_run(cfg, out):
        calls.append(cfg.train_steps)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the first invocation is stopped
        (out / "experiment.md").write_text("| table |")
        return "| table |"

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    out = tmp_path / "exp"
    assert main(["experiment", "--out", str(out), "train_steps=3"]) == 130
    assert main(["experiment", "--out", str(out), "train_steps=3"]) == 0
    records = read_invocations(out)
    assert [(r["event"], r.get("status")) for r in records] == [("start", None), ("end", "interrupted"),
                                                                ("start", None), ("end", "ok")]
    assert records[0]["command"] == f"spark-jax experiment --out {out} train_steps=3"
    table = (out / "experiment.md").read_text()
    assert table.startswith("| table |\n\nRan as 2 invocation(s) from ") and "h of wall time in the 2 that ended" in table


@pytest.mark.slow
def test_two_seeds_end_to_end_give_the_paired_table_and_resume(tmp_path, monkeypatch):
    from spark_jax.apps import pipeline
    from spark_jax.core import native_memory
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    # each phase starts without the previous phase's executables (the bug: seed 1's first arm was
    # refused by the memory plan while seed 0's evaluation executables were still held)
    events = []

    def recording(name, fn):
        return lambda *a, **k: (events.append(name), fn(*a, **k))[1]

    monkeypatch.setattr(native_memory, "release_compiled_code",
                        recording("release", native_memory.release_compiled_code))
    monkeypatch.setattr(pipeline, "run_stage1", recording("stage1", pipeline.run_stage1))
    monkeypatch.setattr(pipeline, "train_arm", recording("train", pipeline.train_arm))
    monkeypatch.setattr(experiment, "_evaluate", recording("eval", experiment._evaluate))

    model = build_tiny_chat_model(tmp_path / "model")
    data = write_jsonl(tmp_path / "q.jsonl", make_bank({"math": 5, "law": 5}))
    cfg = ExperimentConfig(model=str(model), data=str(data), train_questions=3, heldout_per_category=1,
                           rollout_steps=2, train_steps=1, batch_size=2, lora_rank=2, eval_steps=1,
                           arms=("sft:greedy", "sft:lowest_viable", "ppo:lowest_viable"), eval_modes=("score",),
                           max_tokens_tool=8, max_tokens_thought=8, max_tokens_answer=8, concurrency=4,
                           seeds=(3, 4))
    out = tmp_path / "exp"
    table = run_experiment(cfg, out)
    phases = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
    # the base model first, then each arm evaluated as soon as it is trained; a last pass reads the rows
    per_arm = ["release", "train", "release", "eval"] * 3
    assert phases == (["release", "stage1", "release", "eval"] + per_arm + ["release", "eval"]) * 2
    # the held-out questions are the same for both seeds; the Stage 1 training samples differ
    heldout = {s: [json.loads(x)["question_id"] for x in (out / f"seed_{s}" / "eval_score" / "SFT-rarity.jsonl")
                   .read_text().splitlines()] for s in (3, 4)}
    assert heldout[3] == heldout[4] and len(heldout[3]) == 2
    train = {s: json.loads((out / f"seed_{s}" / "stage1_greedy" / "manifest.json").read_text())["questions"]["train"]
             for s in (3, 4)}
    assert train[3] != train[4] and not set(train[3]) & set(heldout[3])
    assert experiment.train_config(cfg, "sft", "d", seed=4).seed == 4
    # base rows are evaluated once and reused
    assert ((out / "seed_3" / "eval_score" / "base.jsonl").read_text()
            == (out / "seed_4" / "eval_score" / "base.jsonl").read_text())
    assert "## score mode: mean over seeds" in table and "## score mode: paired differences" in table
    assert "**Acting with the most diverse tools** (score mode;" in table
    for pair in ("PPO-rarity − SFT-rarity", "SFT-rarity − SFT-greedy", "SFT-greedy − base", "PPO-rarity − base"):
        for metric in ("pooled tool entropy (bits)", "per-state header entropy (bits)", "accuracy (%, official)"):
            assert f"| {pair} | {metric} |" in table
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [3, 4] and set(summary["modes"]["score"]["per_seed"]) == {"3", "4"}
    acc = [r for r in summary["modes"]["score"]["paired"] if r["a"] == "PPO-rarity" and r["b"] == "SFT-rarity"
           and r["key"] == "accuracy"][0]
    # each difference also has its interval over the held-out questions, and the table shows it
    assert all("ci95_questions" in r for r in summary["modes"]["score"]["paired"])
    assert acc["ci95_questions"] is not None and acc["ci95_questions"][0] <= acc["mean"] <= acc["ci95_questions"][1]
    assert "| 95% CI over questions | per seed | intervals show |" in table
    per_seed = summary["modes"]["score"]["per_seed"]
    choice = summary["modes"]["score"]["most_diverse_acting"]
    assert choice is None or choice["system"] in per_seed["3"]
    assert acc["differences"] == pytest.approx([per_seed[s]["PPO-rarity"]["accuracy"] - per_seed[s]["SFT-rarity"]
                                                ["accuracy"] for s in ("3", "4")])
    # every answer is read in the default answer mode
    assert all(per_seed[s][n]["answered_rate"] == 1.0 for s in per_seed for n in per_seed[s])
    assert (out / "experiment.md").read_text() == table and "### seed 4" in table
    assert (out / "seeds_score.png").stat().st_size > 1000 and "](seeds_score.png)" in table
    # a rerun resumes every seed and arm: no row file is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("seed_*/eval_score/*.jsonl")}
    assert len(stamps) == 8
    assert run_experiment(cfg, out) == table
    assert {p: p.stat().st_mtime_ns for p in out.glob("seed_*/eval_score/*.jsonl")} == stamps


@pytest.mark.slow
def test_a_run_folder_without_checkpoints_retrains_only_what_an_unevaluated_arm_needs(tmp_path, monkeypatch):
    """A new machine gets the run folder without its checkpoints (too big to carry): evaluated arms
    are not retrained, but the warm-start source of an arm still to be evaluated is, right before
    that arm (a stop before it would otherwise lose the retraining too)."""
    import shutil

    from spark_jax.apps import pipeline
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    trained = []
    train_arm = pipeline.train_arm
    monkeypatch.setattr(pipeline, "train_arm", lambda cfg, run_dir: (trained.append(run_dir.name),
                                                                     train_arm(cfg, run_dir))[1])
    model = build_tiny_chat_model(tmp_path / "model")
    data = write_jsonl(tmp_path / "q.jsonl", make_bank({"math": 4, "law": 4}))
    cfg = ExperimentConfig(model=str(model), data=str(data), train_questions=3, heldout_per_category=1,
                           rollout_steps=2, train_steps=1, batch_size=2, lora_rank=2, eval_steps=1,
                           selections=("lowest_viable",),
                           arms=("sft:lowest_viable", "ppo:lowest_viable", "ppo:lowest_viable@sft"),
                           eval_modes=("score",), max_tokens_tool=8, max_tokens_thought=8, max_tokens_answer=8,
                           concurrency=4)
    out = tmp_path / "exp"
    run_experiment(cfg, out)
    assert trained == ["train_sft_lowest_viable", "train_ppo_lowest_viable", "train_ppo_lowest_viable_from_sft"]
    for checkpoints in out.glob("train_*/checkpoints"):
        shutil.rmtree(checkpoints)
    rows = out / "eval_score"
    stamps = {p.name: p.stat().st_mtime_ns for p in rows.glob("*.jsonl")}

    trained.clear()  # every arm evaluated: nothing is retrained
    run_experiment(cfg, out)
    assert trained == []

    redo = ("PPO-rarity.jsonl", "PPO-rarity-from-SFT.jsonl")  # not evaluated yet
    for name in redo:
        (rows / name).unlink()
    run_experiment(cfg, out)
    # the plain PPO arm first, then the SFT source right before the arm that warm-starts from it
    assert trained == ["train_ppo_lowest_viable", "train_sft_lowest_viable", "train_ppo_lowest_viable_from_sft"]
    assert all((rows / name).is_file() for name in redo)
    assert {p.name: p.stat().st_mtime_ns for p in rows.glob("*.jsonl") if p.name not in redo} \
        == {k: v for k, v in stamps.items() if k not in redo}


def test_seeds_must_be_distinct():
    with pytest.raises(ValueError, match="seeds must be distinct"):
        ExperimentConfig(seeds=(1, 1))


def test_saved_rows_with_a_bad_line_name_file_and_line(tmp_path):
    from spark_jax.core.jsonl import JsonlError

    rows = tmp_path / "base.jsonl"
    rows.write_text('{"question_id": 1}\n\n{"question_id": 2\n')
    with pytest.raises(JsonlError, match=rf"^{rows}:3: not valid JSON"):
        experiment._read_rows(rows)
