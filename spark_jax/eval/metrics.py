"""Evaluation metrics as pure functions over prediction rows.

A prediction row (one question answered by one system) is a dict with at least
``question_id``, ``category``, ``model``, ``pred`` (the extracted letter, or None when no answer
could be read), ``correct`` (bool, by MMLU-Pro's official rule: an unread answer gets the
official fallback guess, :func:`official_prediction`) and ``actions`` (the action names the system chose, in order, ending with ``answer``; reference rows
from a predictions file have ``None``). Agent rows also have ``steps``, ``format_errors``,
``forced_answer`` (the final answer was forced after ``max_steps``; not a policy choice),
``policy_turns`` (messages the policy wrote as action choices, format errors included, the forced
answer excluded) and ``header_logprobs`` (score mode: one ``{action: summed header log-prob}`` per
policy step; empty in generate mode). Rows written by :func:`score_prediction` also carry
``correct_strict`` (extracted and right), ``num_options`` and ``answer``.

"Tool actions" are every chosen action but ``answer`` (the eight tools and ``cot``); "tool calls
per question" counts them. Entropies and KL are in bits.
"""

from __future__ import annotations

import collections
import math
import random
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MMLU_PRO_CATEGORIES = (
    "biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)
ANSWER_ACTION = "answer"
# The policy's nine non-answer choices, in the order of spark_jax.protocol.prompts.candidate_actions().
TOOL_ACTIONS = ("calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot")
Z_95 = 1.959963984540054  # standard normal 97.5% quantile
LABEL_SMOOTHING = 0.5
NO_TOOL_CALLS = "no tool calls"
NO_TRAJECTORIES = "no trajectories"


LETTERS = "ABCDEFGHIJ"
OFFICIAL_FALLBACK_SEED = 12345  # TIGER-AI-Lab/MMLU-Pro evaluate_from_local.py, save_res


def official_guess(num_options: int) -> str:
    """The letter MMLU-Pro's official scorer credits when no answer was extracted.

    ``save_res`` runs ``random.seed(12345); x = random.randint(0, len(options) - 1)`` before every
    such question, so the guess depends only on the option count (index 6, "G", for 10 options).
    A private generator gives the same draw without touching the global one.
    """
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options must be in [1, {len(LETTERS)}], got {num_options}")
    return LETTERS[random.Random(OFFICIAL_FALLBACK_SEED).randint(0, num_options - 1)]


def official_prediction(pred: str | None, num_options: int) -> str:
    """``pred`` when an answer was extracted, else :func:`official_guess` (the official ``if not pred``)."""
    return pred if pred else official_guess(num_options)


def score_prediction(pred: str | None, question: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring fields of a prediction row for an MMLU-Pro question (``options``, ``answer``).

    ``correct`` is the official figure (fallback guess included); ``correct_strict`` counts only
    an extracted right letter.
    """
    n = len(question["options"])
    answer = question["answer"]
    return {"pred": pred or None, "answer": answer, "num_options": n,
            "correct": official_prediction(pred, n) == answer, "correct_strict": bool(pred) and pred == answer}


def correct_strict(row: Mapping[str, Any]) -> bool:
    """Extracted and right; rows from before ``correct_strict`` existed counted only that."""
    if "correct_strict" in row:
        return bool(row["correct_strict"])
    return bool(row["correct"]) and row.get("pred") is not None


def shannon_entropy_bits(counts: Mapping[str, int] | Iterable[int]) -> float:
    """H = -sum p log2 p over the non-zero counts; 0.0 for an empty distribution."""
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    total = sum(values)
    if total <= 0:
        return 0.0
    return float(-sum((c / total) * math.log2(c / total) for c in values if c > 0)) + 0.0  # no -0.0


def accuracy(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Micro-averaged accuracy of ``correct`` (official rule, as the official script), None for no rows."""
    return sum(bool(r["correct"]) for r in rows) / len(rows) if rows else None


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval ``(lo, hi)`` for a binomial proportion ``successes / n``; None for n = 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def tool_actions(row: Mapping[str, Any]) -> list[str]:
    """The actions that count for tool-selection statistics: every chosen action but the answer."""
    return [a for a in row.get("actions") or [] if a != ANSWER_ACTION]


def policy_turns(row: Mapping[str, Any]) -> int:
    """Messages the policy wrote as action choices: ``policy_turns``, else ``steps - forced_answer``."""
    if row.get("policy_turns") is not None:
        return int(row["policy_turns"])
    return int(row.get("steps", 0)) - int(bool(row.get("forced_answer", False)))


def format_error_rate(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """sum(format_errors) / sum(policy turns); None when no policy turn was written."""
    turns = sum(policy_turns(r) for r in rows)
    return sum(int(r.get("format_errors", 0)) for r in rows) / turns if turns > 0 else None


def entropy_rows_bits(counts: np.ndarray) -> np.ndarray:
    """Entropy (bits) of each row of a non-negative ``[R, A]`` count matrix; NaN for an all-zero row."""
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / total
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    h = -terms.sum(axis=1) + 0.0
    return np.where(total[:, 0] > 0, h, np.nan)


def bootstrap_entropy_interval(
    counts: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the pooled-count entropy (bits).

    ``counts``: ``[Q, A]`` per-question action counts. Questions are resampled with replacement
    (indices ``[R, Q]``, ``R = n_boot``), the resampled counts pooled and their entropy taken;
    resamples without any action are dropped. None when there is no action at all.
    """
    counts = np.asarray(counts, dtype=np.float64)
    q = counts.shape[0]
    if q == 0 or counts.sum() <= 0:
        return None
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // q))  # bounds the [chunk, Q] index and weight matrices
    ents = []
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        idx = rng.integers(0, q, size=(r, q))
        weights = np.bincount((idx + q * np.arange(r)[:, None]).ravel(), minlength=r * q).reshape(r, q)
        ents.append(entropy_rows_bits(weights @ counts))
    ents = np.concatenate(ents)
    ents = ents[~np.isnan(ents)]
    if ents.size == 0:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.percentile(ents, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def header_entropy_bits(logprobs: Mapping[str, float]) -> float:
    """Entropy (bits) of the softmax over one step's header log-probs (``{action: log-prob}``)."""
    x = np.asarray(list(logprobs.values()), dtype=np.float64)
    x = x - x.max()
    p = np.exp(x) / np.exp(x).sum()
    return float(-(p[p > 0] * np.log2(p[p > 0])).sum()) + 0.0


def question_header_entropies_bits(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per question, the mean over its steps of :func:`header_entropy_bits`; rows without
    ``header_logprobs`` (generate mode, reference rows) are skipped."""
    return [float(np.mean([header_entropy_bits(s) for s in r["header_logprobs"]]))
            for r in rows if r.get("header_logprobs")]


def mean_header_entropy_bits(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean over questions of the mean over that question's steps of :func:`header_entropy_bits`.

    Averaging per question first weights every question equally, however many steps it took.
    Rows without ``header_logprobs`` (generate mode, reference rows) are skipped; None if all are.
    """
    per_q = question_header_entropies_bits(rows)
    return float(np.mean(per_q)) if per_q else None


def bootstrap_mean_interval(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement); None if empty."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def kl_to_labels_bits(
    counts: Mapping[str, int], label_counts: Mapping[str, float], smoothing: float = LABEL_SMOOTHING
) -> float | None:
    """KL(system || labels) in bits over the tool actions (``answer`` excluded).

    The action set is :data:`TOOL_ACTIONS` plus any other non-answer action in either count; the
    labels get ``smoothing`` added to every action's count so the KL is finite. None when the
    system has no tool action or the labels are empty.
    """
    support = list(TOOL_ACTIONS) + sorted((set(counts) | set(label_counts)) - set(TOOL_ACTIONS) - {ANSWER_ACTION})
    p = np.array([counts.get(a, 0) for a in support], dtype=np.float64)
    q = np.array([label_counts.get(a, 0) for a in support], dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return None
    p /= p.sum()
    q = (q + smoothing) / (q + smoothing).sum()
    nz = p > 0
    return max(0.0, float((p[nz] * np.log2(p[nz] / q[nz])).sum()))


def summarize_system(
    rows: Sequence[Mapping[str, Any]],
    categories: Sequence[str] = MMLU_PRO_CATEGORIES,
    *,
    label_counts: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """One system's summary (the stable keys first; see the module docstring for the terms).

    Stable keys: ``name`` (None here; set by :func:`summarize`), ``questions``, ``accuracy``
    (MMLU-Pro's official rule: an unread answer gets the official fallback guess),
    ``tool_entropy_bits`` (None with ``tool_entropy_reason`` when there is no tool call or no
    trajectory), ``tool_calls_per_question``, ``format_error_rate`` (per policy turn),
    ``action_counts`` (tool actions, non-zero counts). Also ``accuracy_ci95`` (Wilson),
    ``answered_rate`` (share with an extracted letter) and ``accuracy_strict`` (extracted and right,
    over all questions), each with a Wilson ``_ci95``, ``header_entropy_ci95`` (bootstrap of the mean),
    ``tool_entropy_ci95`` (bootstrap over questions, ``n_boot`` resamples, ``seed``),
    ``header_entropy_bits`` (score mode), ``kl_to_labels_bits`` (against ``label_counts``),
    and per-category figures (``per_category``: ``n``, ``correct``, ``accuracy``, ``actions``,
    ``entropy_bits``, ``header_entropy_bits`` per category).
    """
    by_cat: dict[str, list] = collections.defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r)
    unknown = sorted(set(by_cat) - set(categories))
    if unknown:
        raise ValueError(f"rows have categories outside the known set: {unknown}")
    has_trajectories = any(r.get("actions") is not None for r in rows)
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
            "entropy_bits": shannon_entropy_bits(actions) if actions else None,
            "header_entropy_bits": mean_header_entropy_bits(cat_rows),
        }
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    action_counts = dict(sorted(overall_actions.items()))
    traj = [r for r in rows if r.get("actions") is not None]
    entropy = entropy_ci = reason = None
    if not has_trajectories:
        reason = NO_TRAJECTORIES
    elif not overall_actions:
        reason = NO_TOOL_CALLS
    else:
        entropy = shannon_entropy_bits(overall_actions)
        names = sorted(overall_actions)
        col = {a: i for i, a in enumerate(names)}
        matrix = np.zeros((len(traj), len(names)))
        for i, r in enumerate(traj):
            for a in tool_actions(r):
                matrix[i, col[a]] += 1
        ci = bootstrap_entropy_interval(matrix, n_boot=n_boot, seed=seed)
        entropy_ci = list(ci) if ci is not None else None
    ci_acc = wilson_interval(correct, n)
    answered = sum(r.get("pred") is not None for r in rows)
    strict = sum(correct_strict(r) for r in rows)
    ci_answered, ci_strict = wilson_interval(answered, n), wilson_interval(strict, n)
    header_ci = bootstrap_mean_interval(question_header_entropies_bits(traj), n_boot=n_boot, seed=seed)
    calls = (sum(len(tool_actions(r)) for r in traj) / len(traj)) if traj else None
    return {
        "name": None,
        "questions": n,
        "accuracy": accuracy(rows),
        "accuracy_ci95": list(ci_acc) if ci_acc is not None else None,
        "answered_rate": answered / n if n else None,
        "answered_rate_ci95": list(ci_answered) if ci_answered is not None else None,
        "accuracy_strict": strict / n if n else None,
        "accuracy_strict_ci95": list(ci_strict) if ci_strict is not None else None,
        "tool_entropy_bits": entropy,
        "tool_entropy_ci95": entropy_ci,
        "tool_entropy_reason": reason,
        "no_tool_calls": reason == NO_TOOL_CALLS,
        "tool_calls_per_question": calls,
        "format_error_rate": format_error_rate(traj) if traj else None,
        "action_counts": action_counts,
        "header_entropy_bits": mean_header_entropy_bits(traj),
        "header_entropy_ci95": list(header_ci) if header_ci is not None else None,
        "kl_to_labels_bits": kl_to_labels_bits(overall_actions, label_counts) if label_counts and traj else None,
        "has_trajectories": has_trajectories,
        "correct": correct,
        "no_answer": sum(r.get("pred") is None for r in rows),
        "forced_answers": sum(bool(r.get("forced_answer")) for r in traj) if traj else None,
        "policy_turns": sum(policy_turns(r) for r in traj) if traj else None,
        "avg_steps": (sum(r.get("steps", 0) for r in traj) / len(traj)) if traj else None,
        "per_category": per_category,
    }


def summarize(
    rows: Sequence[Mapping[str, Any]],
    categories: Sequence[str] = MMLU_PRO_CATEGORIES,
    *,
    label_counts: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """``{model: summarize_system(rows of that model)}`` in first-seen order of models.

    ``label_counts``: training label counts ``{action: count}`` for every system, or
    ``{model: {action: count}}`` per system (a system missing from it gets no KL).
    """
    systems: dict[str, list] = {}
    for r in rows:
        systems.setdefault(r["model"], []).append(r)
    per_system = bool(label_counts) and all(isinstance(v, Mapping) for v in label_counts.values())
    out = {}
    for name, sys_rows in systems.items():
        labels = label_counts.get(name) if per_system else label_counts
        out[name] = dict(summarize_system(sys_rows, categories, label_counts=labels, n_boot=n_boot, seed=seed),
                         name=name)
    return out
