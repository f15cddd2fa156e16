"""``spark-jax export``: a run's step records as JSONL, one object per (question, step)."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from spark_jax.rollout.records import iter_step_records
from spark_jax.rollout.store import atomic_write_text


def export_record(rec: dict[str, Any]) -> dict[str, Any]:
    """The record with ``context`` (the state s_t as chat messages) next to ``messages``."""
    out = dict(rec)
    out["context"] = rec["messages"]
    return out


def export_jsonl(run_dir: str | pathlib.Path, out: str) -> int:
    """Writes every record, ordered by (question_id, step); returns the count."""
    records = sorted(iter_step_records(run_dir), key=lambda r: (r["question_id"], r["step"]))
    text = "".join(json.dumps(export_record(r), ensure_ascii=False) + "\n" for r in records)
    if out == "-":
        sys.stdout.write(text)
    else:
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return len(records)
