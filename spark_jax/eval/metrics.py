"""Evaluation metrics as pure functions over prediction rows.

A prediction row (one question answered by one system) is a dict with at least
``question_id``, ``category``, ``model``, ``pred`` (letter or None), ``correct`` (bool) and
``actions`` (the action names the system took, in order; reference rows from a predictions file
have none). Optional: ``format_errors`` (int), ``steps`` (int).
"""

from __future__ import annotations

import collections
import math
from typing import Any, Iterable, Mapping, Sequence

MMLU_PRO_CATEGORIES = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)
ANSWER_ACTION = "answer"


def shannon_entropy_bits(counts: Mapping[str, int] | Iterable[int]) -> float:
    """H = -sum p log2 p over the non-zero counts; 0.0 for an empty distribution."""
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    total = sum(values)
    if total <= 0:
        return 0.0
    return float(-sum((c / total) * math.log2(c / total) for c in values if c > 0))


def accuracy(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Micro-averaged accuracy (as the official script), None for no rows."""
    return sum(bool(r["correct"]) for r in rows) / len(rows) if rows else None


def tool_actions(row: Mapping[str, Any]) -> list[str]:
    """The actions that count for tool-selection statistics: every chosen action but the answer."""
    return [a for a in row.get("actions") or [] if a != ANSWER_ACTION]


def summarize_system(rows: Sequence[Mapping[str, Any]], categories: Sequence[str] = MMLU_PRO_CATEGORIES) -> dict:
    """Accuracy (overall and per category), action distribution and selection entropy, steps,
    tool calls and format errors per question for one system's rows."""
    by_cat: dict[str, list] = collections.defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r)
    unknown = sorted(set(by_cat) - set(categories))
    if unknown:
        raise ValueError(f"rows have categories outside the known set: {unknown}")
    overall_actions: collections.Counter = collections.Counter()
    per_category = {}
    for cat in categories:
        cat_rows = by_cat.get(cat, [])
        actions = collections.Counter(a for r in cat_rows for a in tool_actions(r))
        overall_actions.update(actions)
        per_category[cat] = {
            "n": len(cat_rows),
            "correct": sum(bool(r["correct"]) for r in cat_rows),
            "accuracy": accuracy(cat_rows),
            "actions": dict(sorted(actions.items())),
            "entropy_bits": shannon_entropy_bits(actions),
        }
    n = len(rows)
    has_trajectories = any("actions" in r and r["actions"] is not None for r in rows)
    return {
        "n": n,
        "correct": sum(bool(r["correct"]) for r in rows),
        "accuracy": accuracy(rows),
        "no_answer": sum(r.get("pred") is None for r in rows),
        "actions": dict(sorted(overall_actions.items())),
        "entropy_bits": shannon_entropy_bits(overall_actions) if has_trajectories else None,
        "avg_steps": (sum(r.get("steps", 0) for r in rows) / n) if n and has_trajectories else None,
        "avg_tool_calls": (sum(len(tool_actions(r)) for r in rows) / n) if n and has_trajectories else None,
        "format_error_rate": (
            sum(r.get("format_errors", 0) for r in rows) / max(1, sum(r.get("steps", 0) for r in rows))
            if has_trajectories else None
        ),
        "per_category": per_category,
    }


def summarize(rows: Sequence[Mapping[str, Any]], categories: Sequence[str] = MMLU_PRO_CATEGORIES) -> dict:
    """``{model: summarize_system(rows of that model)}`` in first-seen order of models."""
    systems: dict[str, list] = {}
    for r in rows:
        systems.setdefault(r["model"], []).append(r)
    return {name: summarize_system(sys_rows, categories) for name, sys_rows in systems.items()}
