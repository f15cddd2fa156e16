"""Comparison report: report.json, predictions.jsonl, report.md and PNG plots in one directory."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from spark_jax.core.jsonl import iter_jsonl
from spark_jax.eval.metrics import (
    LABEL_SMOOTHING,
    MMLU_PRO_CATEGORIES,
    NO_TOOL_CALLS,
    TOOL_ACTIONS,
    score_prediction,
    summarize,
)

PLOTS = ("accuracy_by_category.png", "actions_heatmap.png", "entropy.png", "actions_by_system.png")
PREDICTION_KEYS = ("question_id", "category", "model", "pred", "correct", "correct_strict", "answer", "num_options",
                   "actions", "steps", "format_errors", "forced_answer", "policy_turns", "header_logprobs",
                   "answer_mode")


def load_reference_predictions(
    path: str | pathlib.Path, questions: Sequence[Mapping[str, Any]], name: str
) -> list[dict[str, Any]]:
    """Rows for a published predictions file (question_id, pred), restricted to ``questions``.

    Correctness is judged against our questions' ``answer`` letter (authoritative), by the official
    rule (a missing prediction gets the official fallback guess). A question the
    file lacks is an error naming it, since a silently shorter reference row would mislead.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference predictions file not found: {path}")
    preds: dict[int, str | None] = {}
    for where, rec in iter_jsonl(path, error=ValueError):
        try:
            preds[int(rec["question_id"])] = rec.get("pred")
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not a prediction record ({e!r})") from None
    missing = [q["question_id"] for q in questions if int(q["question_id"]) not in preds]
    if missing:
        raise ValueError(f"{path} has no prediction for question_id(s) {missing[:10]}"
                         + (" ..." if len(missing) > 10 else ""))
    rows = []
    for q in questions:
        pred = preds[int(q["question_id"])]
        rows.append({"question_id": int(q["question_id"]), "category": q["category"], "model": name,
                     **score_prediction(pred, q), "actions": None})
    return rows


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _fmt_num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _fmt_interval(x: float | None, ci: Sequence[float] | None, fmt) -> str:
    if x is None:
        return "-"
    return fmt(x) + ("" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]")


def _fmt_entropy(s: Mapping[str, Any]) -> str:
    if s["tool_entropy_bits"] is None:
        return s["tool_entropy_reason"] if s["tool_entropy_reason"] == NO_TOOL_CALLS else "-"
    return _fmt_interval(s["tool_entropy_bits"], s["tool_entropy_ci95"], _fmt_num)


def _fmt_header_entropy(s: Mapping[str, Any]) -> str:
    return _fmt_interval(s.get("header_entropy_bits"), s.get("header_entropy_ci95"), _fmt_num)


def _fmt_actions(s: Mapping[str, Any]) -> str:
    if not s["has_trajectories"]:
        return "-"
    return ", ".join(f"{a} {c}" for a, c in s["action_counts"].items()) or "none"


# The two entropies, named the same way in every table and plot (docs/evaluation.md defines them).
POOLED_ENTROPY = "pooled tool entropy"
HEADER_ENTROPY = "per-state header entropy"

SUMMARY_HEADER = (f"| system | questions | accuracy (%, official) [95% CI] | answered (%) [95% CI] "
                  f"| strict accuracy (%) [95% CI] | {POOLED_ENTROPY} (bits) [95% CI] "
                  f"| {HEADER_ENTROPY} (bits) [95% CI] | tool calls / question "
                  "| format errors (% of policy turns) | actions |")


def summary_table(summary: Mapping[str, Any]) -> str:
    """A Markdown table, one row per system: questions, official accuracy, answered rate and strict
    accuracy [Wilson 95%], pooled tool entropy [bootstrap 95%] or "no tool calls", per-state header
    entropy [bootstrap 95%] (score mode), tool calls per question, format errors, action counts."""
    lines = [SUMMARY_HEADER, "|---" * 10 + "|"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['questions']} | {_fmt_interval(s['accuracy'], s['accuracy_ci95'], _fmt_pct)} | "
            f"{_fmt_interval(s.get('answered_rate'), s.get('answered_rate_ci95'), _fmt_pct)} | "
            f"{_fmt_interval(s.get('accuracy_strict'), s.get('accuracy_strict_ci95'), _fmt_pct)} | "
            f"{_fmt_entropy(s)} | {_fmt_header_entropy(s)} | {_fmt_num(s['tool_calls_per_question'])} | "
            f"{_fmt_pct(s['format_error_rate'])} | {_fmt_actions(s)} |"
        )
    return "\n".join(lines)


def choice_table(summary: Mapping[str, Any]) -> str:
    """Both entropies and the KL to the training labels per system; "" when there is no agent system."""
    names = [n for n, s in summary.items()
             if s["header_entropy_bits"] is not None or s["kl_to_labels_bits"] is not None
             or s["tool_entropy_bits"] is not None]
    if not names:
        return ""
    lines = [f"| system | {POOLED_ENTROPY} (bits, max {math.log2(len(TOOL_ACTIONS)):.2f}) "
             f"| {HEADER_ENTROPY} (bits, max {math.log2(len(TOOL_ACTIONS) + 1):.2f}) "
             "| KL(system ‖ training labels) (bits) |", "|---|---|---|---|"]
    for n in names:
        s = summary[n]
        lines.append(f"| {n} | {_fmt_entropy(s)} | {_fmt_header_entropy(s)} | {_fmt_num(s['kl_to_labels_bits'])} |")
    return "\n".join(lines)


def category_table(summary: Mapping[str, Any], categories: Sequence[str] = MMLU_PRO_CATEGORIES) -> str:
    """Per category: each system's official accuracy, then its pooled tool entropy and per-state
    header entropy side by side (agent systems only)."""
    names = list(summary)
    traj = [n for n in names if summary[n]["has_trajectories"]]
    lines = ["| category | " + " | ".join(f"{n} acc (%)" for n in names) + " | "
             + " | ".join(f"{n} pooled H | {n} per-state H" for n in traj) + " |"]
    lines.append("|---" * (1 + len(names) + 2 * len(traj)) + "|")
    for cat in categories:
        accs = [_fmt_pct(summary[n]["per_category"][cat]["accuracy"]) for n in names]
        ents = [f"{_fmt_num(summary[n]['per_category'][cat]['entropy_bits'])} | "
                f"{_fmt_num(summary[n]['per_category'][cat].get('header_entropy_bits'))}" for n in traj]
        lines.append(f"| {cat} | " + " | ".join(accs) + " | " + " | ".join(ents) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: str | pathlib.Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "spark-jax evaluation",
    meta: Mapping[str, Any] | None = None,
    categories: Sequence[str] = MMLU_PRO_CATEGORIES,
    label_counts: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes the report files and returns the summary (``report.json``'s ``systems``).

    ``label_counts``, ``n_boot``, ``seed``: as :func:`spark_jax.eval.metrics.summarize`.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, categories, label_counts=label_counts, n_boot=n_boot, seed=seed)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r.get(k) for k in PREDICTION_KEYS}) + "\n")
    report = {"title": title, "meta": dict(meta or {}), "systems": summary}
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    _plot(out, summary, categories)
    md = [f"# {title}", ""]
    for k, v in (meta or {}).items():
        md.append(f"- {k}: {v}")
    md += ["", "## Summary", "", summary_table(summary), "",
           "Accuracy: MMLU-Pro's official rule (an answer that cannot be read gets the official fallback guess, "
           "see docs/evaluation.md); answered: share of questions with a letter extracted; strict accuracy: "
           "extracted and right, over all questions; all three with Wilson 95% intervals. "
           f"{POOLED_ENTROPY.capitalize()}: entropy of the non-answer actions pooled over all questions (variety "
           f"across questions), 95% percentile bootstrap over questions ({n_boot} resamples, seed {seed}). "
           f"{HEADER_ENTROPY.capitalize()}: entropy of the softmax over the ten action headers' log-probs at each "
           "step, averaged over a question's steps, then over questions (how spread each choice is; score mode "
           "only), bootstrap interval of that mean. Format errors: per action message the policy wrote (a forced "
           "final answer is not one).", ""]
    choice = choice_table(summary)
    if choice:
        md += ["## Action choice", "",
               f"Both entropies side by side; KL: to the training labels, {LABEL_SMOOTHING} added to "
               "every label count, `answer` excluded.", "", choice, ""]
    md += ["## By category", "", category_table(summary, categories), ""]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
    (out / "report.md").write_text("\n".join(md))
    return summary


def _entropy_caption(s: Mapping[str, Any]) -> str:
    return f"{POOLED_ENTROPY} {_fmt_num(s['tool_entropy_bits'])}, {HEADER_ENTROPY} {_fmt_num(s['header_entropy_bits'])}"


def _action_order(summary: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    used = {a for n in names for a in summary[n]["action_counts"]}
    return [a for a in TOOL_ACTIONS if a in used] + sorted(used - set(TOOL_ACTIONS))


def _plot(out: pathlib.Path, summary: Mapping[str, Any], categories: Sequence[str]) -> None:
    # deferred: matplotlib is slow to import and only the plots need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(summary)
    x = np.arange(len(categories))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(13, 4.8))
    for i, name in enumerate(names):
        accs = [100 * (summary[name]["per_category"][c]["accuracy"] or 0.0) for c in categories]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, accs, width, label=name)
    ax.set_xticks(x, categories, rotation=35, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("MMLU-Pro accuracy by category")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / PLOTS[0], dpi=110)
    plt.close(fig)

    traj = [n for n in names if summary[n]["has_trajectories"]]
    actions = _action_order(summary, traj)
    fig, axes = plt.subplots(1, max(1, len(traj)), figsize=(4.2 * max(1, len(traj)) + 1, 5.5), squeeze=False)
    im = None
    for col, (ax, name) in enumerate(zip(axes[0], traj or [None])):
        if name is None or not summary[name]["action_counts"]:
            ax.text(0.5, 0.5, f"{name or ''}\nno tool calls", ha="center", va="center")
            ax.axis("off")
            continue
        grid = np.array([[summary[name]["per_category"][c]["actions"].get(a, 0) for a in actions] for c in categories],
                        dtype=float)
        shares = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(actions)), actions, rotation=45, ha="right")
        ax.set_yticks(range(len(categories)), categories if col == 0 else [])
        ax.set_title(f"{name}: action share\n{_entropy_caption(summary[name])}", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of the category's tool actions")
    fig.savefig(out / PLOTS[1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(8, 1.8 * len(traj) + 3), 5))
    pos = np.arange(len(traj))
    max_h = np.log2(len(TOOL_ACTIONS) + 1)
    width = 0.38
    kinds = ((POOLED_ENTROPY, "tool_entropy_bits", "tool_entropy_ci95", "tab:purple", -width / 2),
             (HEADER_ENTROPY, "header_entropy_bits", "header_entropy_ci95", "tab:orange", width / 2))
    for label, key, ci_key, color, shift in kinds:
        vals = np.array([summary[n].get(key) or 0.0 for n in traj])
        has = np.array([summary[n].get(key) is not None for n in traj], dtype=bool)
        lo = np.array([v - (summary[n].get(ci_key) or [v, v])[0] for v, n in zip(vals, traj)])
        hi = np.array([(summary[n].get(ci_key) or [v, v])[1] - v for v, n in zip(vals, traj)])
        if has.any():
            ax.bar(pos[has] + shift, vals[has], width, color=color, yerr=[lo[has], hi[has]], capsize=4,
                   ecolor="black", label=f"{label}, 95% bootstrap interval")
        for i in np.flatnonzero(has):
            ax.text(pos[i] + shift, vals[i] + hi[i] + 0.02 * max_h, f"{vals[i]:.2f}", ha="center", va="bottom",
                    fontsize=7)
        for i in np.flatnonzero(~has):
            why = "no tool calls" if key == "tool_entropy_bits" else "not scored"
            ax.text(pos[i] + shift, 0.05 * max_h, why, ha="center", va="bottom", rotation=90, color="gray",
                    fontsize=7)
    if not traj:
        ax.text(0.5, 0.5, "no agent systems", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(np.log2(len(TOOL_ACTIONS)), ls="--", c="tab:purple", lw=1,
               label=f"{POOLED_ENTROPY} max ({len(TOOL_ACTIONS)} actions)")
    ax.axhline(max_h, ls=":", c="tab:orange", lw=1, label=f"{HEADER_ENTROPY} max ({len(TOOL_ACTIONS) + 1} headers)")
    ax.set_xticks(pos, traj, rotation=20, ha="right")
    ax.set_xlim(-0.6, max(1, len(traj)) - 0.4)
    ax.set_ylim(0, max_h * 1.4)
    ax.set_ylabel("entropy (bits)")
    ax.set_title("Tool selection: pooled tool entropy (variety across questions)\n"
                 "and per-state header entropy (spread of each choice)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=1)
    fig.tight_layout()
    fig.savefig(out / PLOTS[2], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(traj) + 3), 4.5))
    bottom = np.zeros(len(traj))
    totals = np.array([sum(summary[n]["action_counts"].values()) for n in traj], dtype=float)
    cmap = plt.get_cmap("tab10")
    for k, a in enumerate(actions):
        share = np.array([summary[n]["action_counts"].get(a, 0) for n in traj], dtype=float) / np.maximum(totals, 1)
        ax.bar(pos, share, 0.6, bottom=bottom, label=a, color=cmap(k % 10))
        bottom += share
    for i in np.flatnonzero(totals == 0):
        ax.text(pos[i], 0.05, "no tool calls", ha="center", va="bottom", rotation=90, color="gray")
    if not traj:
        ax.text(0.5, 0.5, "no agent systems", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(pos, [f"{n}\n({int(t)} calls)" for n, t in zip(traj, totals)], rotation=20, ha="right")
    ax.set_xlim(-0.6, max(1, len(traj)) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the system's tool actions")
    ax.set_title("Action distribution by system")
    if actions:
        ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    fig.savefig(out / PLOTS[3], dpi=110)
    plt.close(fig)
