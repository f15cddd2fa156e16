import collections
import json

import pytest

from spark_jax.data.mmlu_pro import fingerprint, load_questions
from spark_jax.protocol.actions import parse_action
from spark_jax.protocol.records import read_step_records
from spark_jax.rollout import store as store_mod
from spark_jax.rollout.config import GenerateConfig
from spark_jax.rollout.driver import generate
from spark_jax.rollout.rewards import RewardWeights
from spark_jax.rollout.selection import UsageCounts, select_action
from spark_jax.rollout.store import ConfigMismatchError
from tests.rollout.fakes import FakeGenerator, FakeJudge, fake_tool_runner, write_bank

CATS = {"math": 8, "law": 5, "physics": 5}
ORDER = ("calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot")


@pytest.fixture()
def bank(tmp_path):
    path = write_bank(tmp_path / "test.jsonl", CATS)
    return path, load_questions(path), fingerprint(str(path))


def run(bank, out, judge=None, generator=None, **cfg):
    path, questions, sha = bank
    base = dict(data=str(path), num_questions=9, heldout_per_category=1, steps=4, questions_per_shard=4,
                progress=False)
    base.update(cfg)
    return generate(GenerateConfig(**base), questions=questions, data_sha256=sha,
                    judge=judge or FakeJudge(), generator=generator or FakeGenerator(),
                    tool_runner=fake_tool_runner, out_dir=out)


def shard_bytes(run_dir):
    return [p.read_bytes() for p in sorted((run_dir / "shards").glob("shard-*.jsonl"))]


def test_records_follow_the_schema_and_the_rules(bank, tmp_path):
    out = tmp_path / "run"
    summary = run(bank, out)
    recs = read_step_records(out)
    assert summary.records == len(recs) == 9 * 4 and summary.completed_questions == 9 and not summary.failed
    assert len(list((out / "shards").glob("shard-*.jsonl"))) == 3  # blocks of 4, 4, 1
    manifest = json.loads((out / "manifest.json").read_text())
    train, held = manifest["questions"]["train"], manifest["questions"]["heldout"]
    assert len(train) == 9 and len(held) == 3 and not set(train) & set(held)
    assert collections.Counter((r["question_id"], r["step"]) for r in recs) == {(q, s): 1 for q in train for s in range(4)}
    by_q = collections.defaultdict(list)
    for r in recs:
        by_q[r["question_id"]].append(r)
    for qid, rs in by_q.items():
        rs.sort(key=lambda r: r["step"])
        # The state grows by the action (and the observation after a tool) at each step.
        assert [m["role"] for m in rs[0]["messages"]] == ["system", "user"]
        for prev, cur in zip(rs, rs[1:]):
            extra = [{"role": "assistant", "content": prev["action_text"]}]
            if prev["observation"] is not None:
                extra.append({"role": "user", "content": "Observation: " + prev["observation"]})
            assert cur["messages"] == prev["messages"] + extra
        for r in rs[:-1]:
            assert [c["action"] for c in r["candidates"]] == list(ORDER)
            action = parse_action(r["action_text"])
            assert action.name == r["selected"] != "answer"
            if r["selected"] == "cot":
                assert action.text == r["thought"] and r["tool_input"] is None and r["observation"] is None
            else:
                assert action.text == r["tool_input"] and "```" not in r["tool_input"]
                assert r["observation"] is not None
            if r["selected"] == "python":  # the fake tool runner crashes for python
                assert r["observation"].startswith("Error: RuntimeError: sandbox crashed")
            assert r["final_answer"] is None and r["correct"] is None
        last = rs[-1]
        assert last["selected"] == "answer" and last["candidates"] == [] and last["step"] == 3
        assert parse_action(last["action_text"]).name == "answer"
        assert last["final_answer"] in "ABCD" and last["correct"] == (last["final_answer"] == last["gold"])
        assert last["reward_components"] == {"quality": 0.0, "diversity": 0.0, "outcome": float(last["correct"])}
    assert summary.usage_counts == dict(collections.Counter(r["selected"] for r in recs if r["selected"] != "answer"))
    assert manifest["usage_counts"] == summary.usage_counts


@pytest.mark.parametrize("rule", ["lowest_viable", "least_used", "greedy"])
def test_every_choice_is_the_rule_applied_to_the_counts_before_it(bank, tmp_path, rule):
    out = tmp_path / rule
    run(bank, out, selection=rule, threshold=5.0, rewards=RewardWeights(quality=1.0, diversity=0.5, outcome=2.0))
    manifest = json.loads((out / "manifest.json").read_text())
    recs = {(r["question_id"], r["step"]): r for r in read_step_records(out)}
    usage = UsageCounts()
    for shard in manifest["shards"]:  # replay: blocks in order, then steps, then block order
        for step in range(3):
            for qid in shard["question_ids"]:
                r = recs[(qid, step)]
                scores = {c["action"]: c["score"] for c in r["candidates"]}
                assert r["selected"] == select_action(scores, rule, threshold=5.0, usage=usage, order=ORDER)
                share = usage[r["selected"]] / usage.total if usage.total else 0.0
                assert r["reward_components"]["quality"] == pytest.approx(scores[r["selected"]] / 10)
                assert r["reward_components"]["diversity"] == pytest.approx(0.5 * (1 - share))
                assert r["reward"] == pytest.approx(sum(r["reward_components"].values()))
                usage.add(r["selected"])
        for qid in shard["question_ids"]:
            r = recs[(qid, 3)]
            assert r["reward"] == (2.0 if r["correct"] else 0.0)
    assert usage.to_dict() == manifest["usage_counts"]


def test_rules_differ_in_diversity(bank, tmp_path):
    counts = {}
    for rule in ("lowest_viable", "greedy"):
        counts[rule] = run(bank, tmp_path / rule, selection=rule).usage_counts
    assert counts["lowest_viable"] != counts["greedy"]


def test_records_do_not_depend_on_concurrency_or_timing(bank, tmp_path):
    run(bank, tmp_path / "c1", concurrency=1)
    run(bank, tmp_path / "c4", concurrency=4, judge=FakeJudge(jitter_seed=1), generator=FakeGenerator(batched=True))
    assert shard_bytes(tmp_path / "c1") == shard_bytes(tmp_path / "c4")


def test_batched_generator_gets_whole_blocks(bank, tmp_path):
    gen = FakeGenerator(batched=True)
    run(bank, tmp_path / "run", generator=gen, concurrency=8)
    assert max(gen.batch_sizes) > 1 and all(b <= 8 for b in gen.batch_sizes)


def test_crash_between_shard_and_manifest_then_resume_equals_uninterrupted(bank, tmp_path, monkeypatch):
    run(bank, tmp_path / "ref")
    ref_manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())

    real_write = store_mod.RunStore.write_shard
    calls = {"n": 0}

    def crash_after_second(self, records):
        path = real_write(self, records)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed after the rename, before the manifest update
        return path

    monkeypatch.setattr(store_mod.RunStore, "write_shard", crash_after_second)
    with pytest.raises(KeyboardInterrupt):
        run(bank, tmp_path / "cut")
    listed = json.loads((tmp_path / "cut" / "manifest.json").read_text())["shards"]
    assert len(listed) == 1 and len(shard_bytes(tmp_path / "cut")) == 2  # shard 2 not yet listed
    monkeypatch.setattr(store_mod.RunStore, "write_shard", real_write)
    summary = run(bank, tmp_path / "cut")
    assert summary.resumed and summary.records == 36
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "ref")
    manifest = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert manifest["usage_counts"] == ref_manifest["usage_counts"]
    assert manifest["shards"] == ref_manifest["shards"]


def test_completed_run_is_a_no_op(bank, tmp_path):
    run(bank, tmp_path / "run")
    before = shard_bytes(tmp_path / "run")
    judge = FakeJudge()
    summary = run(bank, tmp_path / "run", judge=judge)
    assert summary.resumed and judge.stats.calls == 0 and shard_bytes(tmp_path / "run") == before


def test_resume_with_other_settings_is_refused_naming_the_keys(bank, tmp_path):
    run(bank, tmp_path / "run")
    with pytest.raises(ConfigMismatchError) as e:
        run(bank, tmp_path / "run", selection="greedy", threshold=7.0)
    msg = str(e.value)
    assert "selection: 'lowest_viable' (run) vs 'greedy' (now)" in msg and "threshold" in msg
    assert "steps" not in msg
    with pytest.raises(ConfigMismatchError, match="judge: 'fake-judge' .run. vs 'other' .now."):
        run(bank, tmp_path / "run", judge=FakeJudge(name="other"))
    # Settings that do not change the records are free to differ.
    assert run(bank, tmp_path / "run", concurrency=3).resumed


def test_failed_questions_are_listed_and_retried_by_the_next_run(bank, tmp_path):
    out = tmp_path / "run"
    first = run(bank, out)
    train = json.loads((out / "manifest.json").read_text())["questions"]["train"]
    bad = train[5]
    out2 = tmp_path / "run2"
    summary = run(bank, out2, judge=FakeJudge(fail_qids={bad}))
    assert set(summary.failed) == {bad} and "malformed JSON" in summary.failed[bad]["error"]
    assert summary.records == 8 * 4
    manifest = json.loads((out2 / "manifest.json").read_text())
    assert str(bad) in manifest["failed"]
    again = run(bank, out2)
    assert again.records == first.records and not again.failed
    assert {(r["question_id"], r["step"]) for r in read_step_records(out2)} == {
        (r["question_id"], r["step"]) for r in read_step_records(out)}


def test_out_of_range_or_missing_scores_fail_the_question(bank, tmp_path):
    class BadJudge(FakeJudge):
        async def score(self, request):
            res = await super().score(request)
            scores = dict(res.scores)
            scores["units"] = 11.0
            return type(res)(ok=True, scores=scores)

    summary = run(bank, tmp_path / "run", judge=BadJudge(), num_questions=2)
    assert len(summary.failed) == 2 and "'units'" in next(iter(summary.failed.values()))["error"]


def test_early_answer_can_end_a_trajectory(bank, tmp_path):
    out = tmp_path / "run"
    gen = FakeGenerator(early=True)
    summary = run(bank, out, generator=gen, stop_on_early_answer=True, steps=5)
    recs = read_step_records(out)
    for qid in {r["question_id"] for r in recs}:
        rs = sorted((r for r in recs if r["question_id"] == qid), key=lambda r: r["step"])
        assert rs[-1]["selected"] == "answer" and all(r["selected"] != "answer" for r in rs[:-1])
        cots = [i for i, r in enumerate(rs) if r["selected"] == "cot"]
        if cots:  # the step after the first answering thought is the answer step
            assert len(rs) == cots[0] + 2
    assert summary.records < 9 * 5


def test_summary_counts_and_entropy(bank, tmp_path):
    from spark_jax.rollout.export import selection_entropy_bits, summarize_run

    assert selection_entropy_bits({"a": 1, "b": 1}) == pytest.approx(1.0)
    assert selection_entropy_bits({"a": 5}) == 0.0 and selection_entropy_bits({}) == 0.0
    assert selection_entropy_bits({"a": 1, "b": 1, "c": 2}) == pytest.approx(1.5)
    summary = run(bank, tmp_path / "run")
    s = summarize_run(tmp_path / "run")
    assert s["records"] == 36 and s["questions"] == 9 and s["judged_steps"] == 27
    assert s["usage_counts"] == summary.usage_counts
    assert 0 < s["selection_entropy_bits"] <= s["max_entropy_bits"]
    recs = read_step_records(tmp_path / "run")
    expected = sum(max(c["score"] for c in r["candidates"]) < 6.0 for r in recs if r["candidates"])
    assert s["steps_without_viable"] == expected
    assert summarize_run(tmp_path / "run")["steps_without_viable"] == expected
    run(bank, tmp_path / "hi", threshold=10.0)  # hardly anything is viable at 10
    assert summarize_run(tmp_path / "hi")["steps_without_viable"] > expected


def test_a_second_writer_on_the_same_run_is_refused(bank, tmp_path):
    # Found in a real run: a first process that was still alive while a second one resumed
    # the same directory wrote question 10096 into two shards. The run lock prevents it.
    holder = store_mod.RunStore(tmp_path / "run")
    holder.open({"x": 1}, "h", {"questions": {"train": [], "heldout": []}})
    with pytest.raises(store_mod.RunLockedError, match="another process"):
        run(bank, tmp_path / "run")
    holder.close()
    with pytest.raises(ConfigMismatchError):  # now it gets as far as the settings check
        run(bank, tmp_path / "run")
