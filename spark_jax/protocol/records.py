"""The step-wise record: one (state s_t, action a_t, reward r_t) of a judged trajectory.

A Stage 1 run directory holds ``manifest.json`` and ``shards/shard-*.jsonl``: complete,
immutable JSONL files (written to a temporary name, fsynced and renamed), one step record a
line. Stage 2 reads them with :func:`read_step_records`.

Record fields (SWiRL decomposition: a trajectory of K steps gives K records):

    question_id  int      MMLU-Pro question id
    category     str      one of the 14 MMLU-Pro categories
    step         int      0-based step index t
    messages     list     the state s_t as chat messages [{"role", "content"}]: system prompt,
                          the question, then earlier actions (assistant) and observations (user)
    action_text  str      a_t as the assistant message the policy is trained to write
                          (spark_jax.protocol.actions format)
    selected     str      the chosen action name (a tool, "cot" or "answer")
    selection_rule str
    candidates   list     [{"action": name, "score": float}] as judged (empty if not judged)
    tool_input   str|None the tool argument the generator wrote
    observation  str|None the tool's output shown to the model next
    thought      str|None the generator's thought (cot) text
    reward       float    r_t
    reward_components dict {"quality", "diversity", "outcome"} (weighted parts of r_t)
    final_answer str|None extracted letter on the last step, else None
    correct      bool|None whether final_answer equals the gold letter (last step only)
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator

from spark_jax.core.jsonl import iter_jsonl

REQUIRED_FIELDS = (
    "question_id", "category", "step", "messages", "action_text", "selected", "selection_rule",
    "candidates", "tool_input", "observation", "thought", "reward", "reward_components",
    "final_answer", "correct",
)
SHARD_GLOB = "shards/shard-*.jsonl"


class RecordError(ValueError):
    """A step record that is malformed; the message names the file and line."""


def validate_record(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise RecordError(f"{where}: record lacks field(s) {missing}")
    msgs = rec["messages"]
    if not isinstance(msgs, list) or not msgs or not all(
        isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs
    ):
        raise RecordError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    if not isinstance(rec["action_text"], str) or not rec["action_text"].strip():
        raise RecordError(f"{where}: 'action_text' must be a non-empty string")
    if not isinstance(rec["reward"], (int, float)) or isinstance(rec["reward"], bool):
        raise RecordError(f"{where}: 'reward' must be a number, got {rec['reward']!r}")
    return rec


def iter_step_records(run_dir: str | pathlib.Path) -> Iterator[dict[str, Any]]:
    """Every step record of a Stage 1 run, shard by shard, validated."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"Stage 1 run directory not found: {run_dir}")
    shards = sorted(run_dir.glob(SHARD_GLOB))
    if not shards:
        raise FileNotFoundError(f"{run_dir}: no {SHARD_GLOB} (run `spark-jax generate --out {run_dir}` first)")
    for shard in shards:
        yield from iter_shard_records(shard)


def iter_shard_records(shard: str | pathlib.Path) -> Iterator[dict[str, Any]]:
    """The step records of one shard file, validated; errors name ``shard:line``."""
    for where, rec in iter_jsonl(shard, error=RecordError):
        yield validate_record(rec, where)


def read_step_records(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    return list(iter_step_records(run_dir))
