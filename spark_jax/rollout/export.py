"""``spark-jax export``: a run's step records as JSONL, one object per (question, step)."""

from __future__ import annotations

import collections
import json
import math
import pathlib
import sys
from typing import Any

from spark_jax.protocol.records import iter_step_records
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


def selection_entropy_bits(counts: dict[str, int]) -> float:
    """Shannon entropy (bits) of the action distribution given by ``counts``."""
    total = sum(counts.values())
    if not total:
        return 0.0
    return float(-sum((n / total) * math.log2(n / total) for n in counts.values() if n))


def summarize_run(run_dir: str | pathlib.Path) -> dict[str, Any]:
    """Records, questions, accuracy, judged-action distribution and its entropy for a run."""
    records = list(iter_step_records(run_dir))
    manifest_path = pathlib.Path(run_dir) / "manifest.json"
    threshold = None
    if manifest_path.is_file():
        threshold = json.loads(manifest_path.read_text(encoding="utf-8")).get("settings", {}).get("threshold")
    judged = [r for r in records if r["candidates"]]
    counts = collections.Counter(r["selected"] for r in records if r["selected"] != "answer")
    finals = [r for r in records if r["selected"] == "answer"]
    total = sum(counts.values())
    return {
        "records": len(records),
        "questions": len({r["question_id"] for r in records}),
        "accuracy": (sum(bool(r["correct"]) for r in finals) / len(finals)) if finals else None,
        "unanswered": sum(r["final_answer"] is None for r in finals),
        "judged_steps": total,
        # Steps where no candidate reached the threshold, so every rule fell back to the best score.
        "steps_without_viable": (None if threshold is None else
                                 sum(max(c["score"] for c in r["candidates"]) < threshold for r in judged)),
        "usage_counts": dict(counts.most_common()),
        "usage_share": {a: round(n / total, 4) for a, n in counts.most_common()},
        "selection_entropy_bits": round(selection_entropy_bits(dict(counts)), 4),
        "max_entropy_bits": round(math.log2(9), 4),
    }
