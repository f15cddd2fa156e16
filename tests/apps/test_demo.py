"""The whole pipeline (Stage 1 -> SFT + PPO -> evaluation -> report) on a tiny model, end to end."""

from __future__ import annotations

import json
import pathlib

import pytest

from spark_jax.apps.demo import DemoConfig, demo_questions_path, run_demo
from tests.data.mmlu_fixtures import make_bank, write_jsonl


@pytest.mark.slow
def test_demo_pipeline_on_tiny_model(tmp_path):
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    tiny_model_dir = build_tiny_chat_model(tmp_path / "model")  # digits are single tokens: the local judge reads them
    data = write_jsonl(tmp_path / "q.jsonl", make_bank({"math": 4, "law": 4, "physics": 4}))
    # the third arm warm-started from the demo's SFT run, with the candidate objective
    cfg = DemoConfig(model=str(tiny_model_dir), data=str(data), train_questions=6, heldout_per_category=1,
                     rollout_steps=2, train_steps=2, batch_size=2, lora_rank=2, eval_steps=1, arm="cand@sft")
    summary = run_demo(cfg, tmp_path / "demo")
    assert list(summary) == ["base", "SFT", "Candidates (from SFT)"]
    assert all(s["questions"] == 3 for s in summary.values())
    out = tmp_path / "demo"
    assert len([l for f in (out / "stage1" / "shards").glob("shard-*.jsonl") for l in f.read_text().splitlines()]) == 12
    for folder in ("train_sft", "train_cand_from_sft"):
        rows = [json.loads(l) for l in (out / folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
    assert "cand_loss" in rows[0]  # the candidate objective ran
    assert (out / "train_sft").resolve().as_posix() in (out / "train_cand_from_sft" / "config.yaml").read_text()
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["systems"]) == set(summary)
    assert (out / "report" / "accuracy_by_category.png").is_file()


def test_shipped_demo_questions_cover_every_category():
    from spark_jax.data.mmlu_pro import load_questions
    from spark_jax.eval.metrics import MMLU_PRO_CATEGORIES

    questions = load_questions(str(demo_questions_path()))
    cats = {q["category"] for q in questions}
    assert cats == set(MMLU_PRO_CATEGORIES) and len(questions) >= 3 * 14


def test_demo_config_validation():
    with pytest.raises(ValueError, match="train_steps"):
        DemoConfig(train_steps=0)
    with pytest.raises(ValueError, match="arm must be one of"):
        DemoConfig(arm="dpo")


@pytest.mark.parametrize("arm, algo, init, xent", [("ppo", "ppo", False, False), ("ppo@sft", "ppo", True, False),
                                                    ("cand@sft", "ppo", True, True), ("sft@sft", "sft", True, False)])
def test_demo_arm_train_configs(tmp_path, arm, algo, init, xent):
    from spark_jax.apps.demo import DEMO_ARMS, train_config

    objective, warm, _ = DEMO_ARMS[arm]
    assert warm == init
    cfg = train_config(DemoConfig(arm=arm), objective, tmp_path / "stage1", tmp_path / "sft" if warm else None)
    assert cfg.algo == algo and bool(cfg.init_from) == init
    assert (cfg.candidates.loss == "xent") == xent


SEEDS_RUN = pathlib.Path(__file__).resolve().parents[2] / "docs" / "results" / "experiment-seeds-2026-12-07" / "run"


def test_demo_default_arm_is_the_multi_seed_runs_most_diverse_acting_system():
    """The demo's third system is the one the paired multi-seed run found acting with the most
    diverse tools in the demo's evaluation mode, with the same selection rule."""
    from spark_jax.apps.demo import DEMO_ARMS
    from spark_jax.apps.experiment import arm_name, parse_arm

    cfg = DemoConfig()
    summary = json.loads((SEEDS_RUN / "seeds.json").read_text())
    chosen = summary["modes"][cfg.eval_mode]["most_diverse_acting"]["system"]
    arms = {arm_name(spec): spec for spec in json.loads((SEEDS_RUN / "config.json").read_text())["arms"]}
    assert chosen in arms, f"{chosen!r} is not a trained arm of the run ({sorted(arms)})"
    algo, selection, init = parse_arm(arms[chosen])
    expected = f"{algo}@{init}" if init else algo
    assert expected in DEMO_ARMS, f"the run's choice {chosen!r} has no demo arm ({sorted(DEMO_ARMS)})"
    assert (cfg.arm, cfg.selection) == (expected, selection)


def test_make_demo_records_its_invocation_even_after_fresh(tmp_path, monkeypatch):
    """``--fresh`` empties the output first; the invocation lines are written after that."""
    from spark_jax.apps import demo
    from spark_jax.cli import main
    from spark_jax.core.provenance import read_invocations

    monkeypatch.setattr(demo, "run_demo", lambda cfg, out: {})
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    assert main(["demo", "--out", str(out), "--fresh", "arm=cand@sft"]) == 0
    records = read_invocations(out)
    assert [(r["event"], r.get("status")) for r in records] == [("start", None), ("end", "ok")]
    assert records[0]["command"] == f"spark-jax demo --out {out} --fresh arm=cand@sft"
