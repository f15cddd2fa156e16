"""benchmarks/packing.py runs small (tiny random model, synthetic trajectories) and reports
packed vs unpacked records/s as one JSON line."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "packing.py"


def test_small_mode_reports_packed_and_unpacked_records_per_second():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small", "--pairs", "1", "--batches", "1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(rows) == 1
    r = rows[0]
    assert r["benchmark"] == "packing_train_step_records" and r["small"] is True
    assert r["records_per_s_packed"] > 0 and r["records_per_s_unpacked"] > 0
    assert r["ratio_packed_over_unpacked"] > 0 and len(r["ratio_min_max"]) == 2 and r["pairs"] == 1
    # the same records per step on both sides: one 5-step trajectory vs 5 records
    assert r["packed"]["records_per_step"] == r["unpacked"]["records_per_step"] == 5
    assert r["packed"]["batch_size"] == 1 and r["unpacked"]["batch_size"] == 5
    # packing reads every shared prefix once: fewer input tokens per record than one row per record
    assert r["tokens_per_record_packed"] < r["tokens_per_record_unpacked"]
    assert r["trajectories"] == 8 and r["records"] == 40
    assert all(s.startswith("(1, ") for s in r["shapes_packed"])
    assert all(s.startswith("(5, ") for s in r["shapes_unpacked"])
