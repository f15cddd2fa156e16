"""Comparison report: report.json, predictions.jsonl, report.md and PNG plots in one directory."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

from spark_jax.eval.metrics import MMLU_PRO_CATEGORIES, summarize

PLOTS = ("accuracy_by_category.png", "actions_heatmap.png", "entropy.png")


def load_reference_predictions(
    path: str | pathlib.Path, questions: Sequence[Mapping[str, Any]], name: str
) -> list[dict[str, Any]]:
    """Rows for a published predictions file (question_id, pred), restricted to ``questions``.

    Correctness is judged against our questions' ``answer`` letter (authoritative). A question the
    file lacks is an error naming it, since a silently shorter reference row would mislead.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference predictions file not found: {path}")
    preds: dict[int, str | None] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                preds[int(rec["question_id"])] = rec.get("pred")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: not a prediction record ({e})") from None
    missing = [q["question_id"] for q in questions if int(q["question_id"]) not in preds]
    if missing:
        raise ValueError(f"{path} has no prediction for question_id(s) {missing[:10]}"
                         + (" ..." if len(missing) > 10 else ""))
    rows = []
    for q in questions:
        pred = preds[int(q["question_id"])]
        rows.append({
            "question_id": int(q["question_id"]), "category": q["category"], "model": name,
            "pred": pred, "correct": pred == q["answer"], "actions": None,
        })
    return rows


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _fmt_num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summary_table(summary: Mapping[str, Any]) -> str:
    """A Markdown table: one row per system with accuracy, entropy, steps, tool calls, errors."""
    lines = [
        "| system | questions | accuracy (%) | tool entropy (bits) | avg steps | avg tool calls | format errors (%) | no answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['n']} | {_fmt_pct(s['accuracy'])} | {_fmt_num(s['entropy_bits'])} | "
            f"{_fmt_num(s['avg_steps'])} | {_fmt_num(s['avg_tool_calls'])} | {_fmt_pct(s['format_error_rate'])} | "
            f"{s['no_answer']} |"
        )
    return "\n".join(lines)


def category_table(summary: Mapping[str, Any], categories: Sequence[str] = MMLU_PRO_CATEGORIES) -> str:
    names = list(summary)
    lines = ["| category | " + " | ".join(f"{n} acc (%)" for n in names) + " | "
             + " | ".join(f"{n} H (bits)" for n in names if summary[n]["entropy_bits"] is not None) + " |"]
    lines.append("|---" * (1 + len(names) + sum(summary[n]["entropy_bits"] is not None for n in names)) + "|")
    for cat in categories:
        accs = [_fmt_pct(summary[n]["per_category"][cat]["accuracy"]) for n in names]
        ents = [_fmt_num(summary[n]["per_category"][cat]["entropy_bits"]) for n in names
                if summary[n]["entropy_bits"] is not None]
        lines.append(f"| {cat} | " + " | ".join(accs) + " | " + " | ".join(ents) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: str | pathlib.Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str = "spark-jax evaluation",
    meta: Mapping[str, Any] | None = None,
    categories: Sequence[str] = MMLU_PRO_CATEGORIES,
) -> dict[str, Any]:
    """Writes the report files and returns the summary (``report.json``'s ``systems``)."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, categories)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r.get(k) for k in ("question_id", "category", "model", "pred", "correct",
                                                       "actions", "steps", "format_errors")}) + "\n")
    report = {"title": title, "meta": dict(meta or {}), "systems": summary}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    _plot(out, summary, categories)
    md = [f"# {title}", ""]
    for k, v in (meta or {}).items():
        md.append(f"- {k}: {v}")
    md += ["", "## Summary", "", summary_table(summary), "", "## By category", "", category_table(summary, categories), ""]
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
    (out / "report.md").write_text("\n".join(md))
    return summary


def _plot(out: pathlib.Path, summary: Mapping[str, Any], categories: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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

    traj = [n for n in names if summary[n]["entropy_bits"] is not None]
    actions = sorted({a for n in traj for a in summary[n]["actions"]})
    fig, axes = plt.subplots(1, max(1, len(traj)), figsize=(4.2 * max(1, len(traj)) + 1, 5.5), squeeze=False)
    im = None
    for col, (ax, name) in enumerate(zip(axes[0], traj or [None])):
        if name is None or not actions:
            ax.text(0.5, 0.5, "no tool actions", ha="center", va="center")
            ax.axis("off")
            continue
        grid = np.array([[summary[name]["per_category"][c]["actions"].get(a, 0) for a in actions] for c in categories],
                        dtype=float)
        shares = grid / np.maximum(grid.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(actions)), actions, rotation=45, ha="right")
        ax.set_yticks(range(len(categories)), categories if col == 0 else [])
        ax.set_title(f"{name}: action share")
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of the category's tool actions")
    fig.savefig(out / PLOTS[1], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ents = [summary[n]["entropy_bits"] for n in traj]
    ax.bar(traj, ents, color="tab:purple")
    if actions:
        ax.axhline(np.log2(len(actions)), ls="--", c="gray", lw=1, label=f"max for {len(actions)} actions")
        ax.legend(fontsize=8)
    ax.set_ylabel("tool-selection entropy (bits)")
    ax.set_title("Diversity of tool selection")
    fig.tight_layout()
    fig.savefig(out / PLOTS[2], dpi=110)
    plt.close(fig)
