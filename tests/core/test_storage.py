"""Run directories through etils.epath: local paths stay local; remote-style handling tested locally."""

from __future__ import annotations

import json
import os

from etils import epath

from spark_jax.core.storage import copy_stage1_run, is_remote, local_stage1_run, run_path
from spark_jax.protocol.records import read_step_records
from tests.conftest import synthetic_records, write_run_dir


def test_run_path_local_is_absolute_and_urls_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = run_path("runs/a")
    assert isinstance(p, epath.Path) and os.fspath(p) == str(tmp_path / "runs" / "a")
    assert os.fspath(run_path("gs://bucket/runs/a")) == "gs://bucket/runs/a"
    assert is_remote("gs://b/x") and not is_remote(tmp_path)


def test_stage1_run_copies_through_epath(tmp_path):
    src = write_run_dir(tmp_path / "src", synthetic_records(20), shard_size=8)
    dst = copy_stage1_run(epath.Path(src), tmp_path / "cache" / "run")
    assert sorted(p.name for p in (dst / "shards").iterdir()) == sorted(p.name for p in (src / "shards").iterdir())
    assert read_step_records(dst) == read_step_records(src)
    assert local_stage1_run(src) == src  # a local run is read in place


def test_metrics_log_rewrites_whole_file_on_object_stores(tmp_path):
    from spark_jax.rl.trainer import MetricsLog

    log = MetricsLog(run_path(tmp_path), start_step=0)
    log.remote = True  # what a gs:// run directory gets: no appends
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 0.5})
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    resumed = MetricsLog(run_path(tmp_path), start_step=2)  # resuming from step 2 drops step 3
    resumed.remote = True
    resumed.write({"step": 3, "loss": 0.25})
    resumed.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 0.5), (2, 0.5), (3, 0.25)]
