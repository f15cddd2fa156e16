"""The CLI through real subprocesses, including SIGKILL at random moments and resume."""

import collections
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from spark_jax.protocol.records import REQUIRED_FIELDS, read_step_records
from tests.rollout.fakes import write_bank

REPO = pathlib.Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "rollout" / "fake_generate.py"  # the test double of Stage 1, beside the driver tests


def fake_cmd(data, out, *extra):
    return [sys.executable, str(FAKE), "--data", str(data), "--num-questions", "16", "--steps", "3",
            "--selection", "lowest_viable", "--judge", "local", "--concurrency", "2", "--out", str(out),
            "--questions-per-shard", "2", "--heldout-per-category", "1", "--no-progress", *extra]


def env(delay):
    e = dict(os.environ, FAKE_DELAY_S=str(delay), PYTHONPATH=str(REPO))
    return e


def shards(run_dir):
    return sorted((run_dir / "shards").glob("shard-*.jsonl"))


def test_generate_help_has_the_stable_flags():
    out = subprocess.run([sys.executable, "-m", "spark_jax.cli", "generate", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--data", "--num-questions", "--steps", "--selection", "--judge", "--judge-base-url",
                 "--judge-model", "--generator", "--concurrency", "--out", "--threshold", "--config", "--data-dir"):
        assert flag in out
    assert "{lowest_viable,least_used,greedy}" in out and "{openai,local}" in out


def test_kill_9_at_random_moments_then_resume_gives_every_step_exactly_once(tmp_path):
    data = write_bank(tmp_path / "test.jsonl", {"math": 8, "law": 6, "biology": 6})
    ref = tmp_path / "ref"
    subprocess.run(fake_cmd(data, ref), cwd=REPO, env=env(0), check=True, capture_output=True)
    out = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen(fake_cmd(data, out), cwd=REPO, env=env(0.02),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = len(shards(out)) if out.exists() else 0
        deadline = time.time() + 60
        while proc.poll() is None and time.time() < deadline and (not out.exists() or len(shards(out)) <= start):
            time.sleep(0.01)  # wait until this run has written a shard of its own
        time.sleep(rng.uniform(0.0, 0.08))  # a block takes about 0.1 s
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the runs finished before they could be killed; raise FAKE_DELAY_S"
    assert len(shards(out)) < len(shards(ref))
    done = subprocess.run(fake_cmd(data, out), cwd=REPO, env=env(0), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["resumed"] and summary["records"] == 16 * 3
    recs = read_step_records(out)
    assert collections.Counter((r["question_id"], r["step"]) for r in recs).most_common(1)[0][1] == 1
    assert len(recs) == 48
    # Same records and usage counts as the run that was never interrupted.
    assert [p.read_bytes() for p in shards(out)] == [p.read_bytes() for p in shards(ref)]
    m_out = json.loads((out / "manifest.json").read_text())
    m_ref = json.loads((ref / "manifest.json").read_text())
    assert m_out["usage_counts"] == m_ref["usage_counts"] and m_out["shards"] == m_ref["shards"]
    assert not list((out / "shards").glob(".*tmp*"))


def test_resume_with_another_rule_is_refused(tmp_path):
    data = write_bank(tmp_path / "test.jsonl", {"math": 4, "law": 4})
    out = tmp_path / "run"
    base = [a for a in fake_cmd(data, out) if a != "16"]
    base[base.index("--num-questions") + 1:base.index("--num-questions") + 1] = ["4"]
    subprocess.run(base, cwd=REPO, env=env(0), check=True, capture_output=True)
    other = list(base)
    other[other.index("lowest_viable")] = "greedy"
    res = subprocess.run(other, cwd=REPO, env=env(0), capture_output=True, text=True)
    assert res.returncode != 0
    assert "refusing to resume" in res.stderr and "selection: 'lowest_viable' (run) vs 'greedy' (now)" in res.stderr


def test_export_writes_one_object_per_step(tmp_path):
    data = write_bank(tmp_path / "test.jsonl", {"math": 4, "law": 4})
    out = tmp_path / "run"
    cmd = fake_cmd(data, out)
    cmd[cmd.index("16")] = "3"
    subprocess.run(cmd, cwd=REPO, env=env(0), check=True, capture_output=True)
    jsonl = tmp_path / "export" / "steps.jsonl"
    subprocess.run([sys.executable, "-m", "spark_jax.cli", "export", str(out), "--jsonl", str(jsonl)],
                   cwd=REPO, check=True, capture_output=True)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 9
    assert [(r["question_id"], r["step"]) for r in rows] == sorted((r["question_id"], r["step"]) for r in rows)
    needed = {"question_id", "category", "step", "context", "candidates", "selected", "selection_rule",
              "tool_input", "observation", "thought", "reward", "reward_components", "final_answer", "correct"}
    for r in rows:
        assert needed <= set(r) and set(REQUIRED_FIELDS) <= set(r)
        assert r["context"] == r["messages"]
        assert all(set(c) == {"action", "score"} for c in r["candidates"])


def test_export_of_a_missing_run_is_a_clear_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "spark_jax.cli", "export", str(tmp_path / "nope"), "--jsonl",
                          str(tmp_path / "x.jsonl")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "not found" in res.stderr
