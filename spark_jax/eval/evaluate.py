"""Evaluation as a library call: every system on the same questions, one prediction row each."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from tqdm.auto import tqdm

from spark_jax.core.native_memory import release_freed_memory
from spark_jax.eval.agent import PolicyAgent


def evaluate_systems(systems, questions, agent_config, *, progress: bool = True) -> list[dict[str, Any]]:
    """Rows for every (name, PretrainedModel-or-loader) system on the same questions."""
    rows: list[dict[str, Any]] = []
    for name, get_model in systems:
        model = get_model()
        bar = tqdm(total=len(questions), desc=f"eval {name}", unit="q", disable=not progress)
        rows += PolicyAgent(model, agent_config, name=name).run(questions, progress=bar)
        bar.close()
        del model
        release_freed_memory()  # else each system's freed XLA buffers stay in the C heap (core.native_memory)
    return rows


def write_trajectories(path: pathlib.Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            if r.get("transcript") is not None:
                f.write(json.dumps({"question_id": r["question_id"], "model": r["model"],
                                    "transcript": r["transcript"]}) + "\n")
