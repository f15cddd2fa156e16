"""OUT/invocations.jsonl: a start and an end line per invocation, the code's commit, and the
summary that states every commit and the wall time of a run resumed over several invocations."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

import pytest

from spark_jax.core import provenance
from spark_jax.core.provenance import (HEARTBEATS, INVOCATIONS, code_version, invocations_summary, read_heartbeats,
                                       read_invocations, record_invocation)

ROOT = pathlib.Path(__file__).parents[2]


def test_code_version_is_this_checkouts_commit():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip(f"the tests do not run from a git checkout: {head.stderr.strip()}")
    got = code_version()
    assert got["commit"] == head.stdout.strip() and isinstance(got["dirty"], bool)


def test_start_and_end_lines_with_status_and_wall_time(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "code_version", lambda: {"version": "0.1.0", "commit": "a" * 40, "dirty": False})
    with record_invocation(tmp_path, ["spark-jax", "experiment", "--out", "runs/x", "seeds=[0, 1]"]):
        lines = read_invocations(tmp_path)
        assert [r["event"] for r in lines] == ["start"]  # written before the body runs
    with pytest.raises(KeyboardInterrupt):
        with record_invocation(tmp_path, ["spark-jax", "experiment"]):
            raise KeyboardInterrupt
    with pytest.raises(ValueError):
        with record_invocation(tmp_path, ["spark-jax", "experiment"]):
            raise ValueError("bad input")
    records = read_invocations(tmp_path)
    assert [r["event"] for r in records] == ["start", "end"] * 3
    assert records[0]["command"] == "spark-jax experiment --out runs/x 'seeds=[0, 1]'"
    assert [r["status"] for r in records[1::2]] == ["ok", "interrupted", "ValueError"]
    assert all(r["wall_s"] >= 0 and r["end"] >= r["start"] for r in records[1::2])
    assert records[1]["commit"] == "a" * 40


def test_summary_names_each_commit_and_the_killed_invocations(tmp_path):
    def line(event, pid, commit, dirty=False, wall=None):
        r = {"event": event, "pid": pid, "start": f"2026-12-06T0{pid}:00:00Z", "commit": commit, "dirty": dirty,
             "version": "0.1.0"}
        return json.dumps(r | ({"wall_s": wall} if wall is not None else {}))

    (tmp_path / INVOCATIONS).write_text("\n".join([
        line("start", 1, "1" * 40), line("end", 1, "1" * 40, wall=3600.0),
        line("start", 2, "1" * 40),  # killed: no end line
        line("start", 3, "2" * 40, dirty=True), line("end", 3, "2" * 40, dirty=True, wall=1800.0),
    ]) + "\n")
    text = invocations_summary(tmp_path)
    assert text.startswith("Ran as 3 invocation(s) from 2026-12-06T01:00:00Z, code 1111111, 2222222 (with "
                           "uncommitted changes); 1.50 h of wall time in the 2 that ended; 1 ended without a record")
    assert invocations_summary(tmp_path / "none") == ""


def test_a_broken_line_names_the_file_and_line(tmp_path):
    (tmp_path / INVOCATIONS).write_text('{"event": "start"}\n{"event": \n')
    with pytest.raises(ValueError, match=r"invocations.jsonl:2: not a JSON line"):
        read_invocations(tmp_path)


def test_heartbeat_is_rewritten_while_the_body_runs_and_removed_at_a_clean_end(tmp_path):
    with record_invocation(tmp_path, ["spark-jax", "demo"], heartbeat_s=0.05):
        start = read_invocations(tmp_path)[0]
        first = read_heartbeats(tmp_path)[(start["pid"], start["start"])]
        time.sleep(0.4)
        later = read_heartbeats(tmp_path)[(start["pid"], start["start"])]
        assert later["wall_s"] > first["wall_s"] and later["command"] == "spark-jax demo"
    assert read_heartbeats(tmp_path) == {} and list((tmp_path / HEARTBEATS).iterdir()) == []
    with pytest.raises(ValueError, match="heartbeat_s must be > 0"):
        with record_invocation(tmp_path, ["spark-jax", "demo"], heartbeat_s=0):
            pass


def test_a_sigkilled_invocation_is_counted_from_its_last_heartbeat(tmp_path):
    """The bug this catches: a session end or the out-of-memory killer sends SIGKILL, no end line
    is written, and the summary used to drop that invocation's time entirely."""
    script = (f"import os, signal, time, pathlib\n"
              f"from spark_jax.core.provenance import record_invocation\n"
              f"with record_invocation(pathlib.Path({str(tmp_path)!r}), ['spark-jax', 'experiment'], heartbeat_s=0.05):\n"
              f"    time.sleep(0.5)\n"
              f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    records = read_invocations(tmp_path)
    assert [r["event"] for r in records] == ["start"]
    beat = read_heartbeats(tmp_path)[(records[0]["pid"], records[0]["start"])]
    assert 0.2 <= beat["wall_s"] < 60 and beat["last_seen"] >= beat["start"]
    text = invocations_summary(tmp_path)
    assert "1 ended without a record (killed), 1 of them with a heartbeat (invocations.alive/) giving at least" in text
    assert "their time not counted" not in text


def test_summary_adds_the_killed_invocations_heartbeats_as_a_lower_bound(tmp_path):
    starts = [{"event": "start", "pid": p, "start": f"2026-12-06T0{p}:00:00Z", "commit": "1" * 40} for p in (1, 2, 3)]
    end = {**starts[0], "event": "end", "wall_s": 3600.0}
    (tmp_path / INVOCATIONS).write_text("\n".join(json.dumps(r) for r in [starts[0], end, starts[1], starts[2]]) + "\n")
    (tmp_path / HEARTBEATS).mkdir()
    (tmp_path / HEARTBEATS / "2.json").write_text(json.dumps({**starts[1], "wall_s": 5400.0}))
    (tmp_path / HEARTBEATS / "3.json").write_text('{"pid": 3, "start"')  # cut short by the kill
    assert invocations_summary(tmp_path) == (
        "Ran as 3 invocation(s) from 2026-12-06T01:00:00Z, code 1111111; 1.00 h of wall time in the 1 that "
        "ended; 2 ended without a record (killed), 1 of them with a heartbeat (invocations.alive/) giving at "
        "least 1.50 h more, 1 without one, their time not counted (`invocations.jsonl`).")
