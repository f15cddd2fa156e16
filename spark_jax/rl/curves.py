"""Training curves of one or more runs as a Markdown table and a PNG.

Reads each run's ``metrics.jsonl`` (``spark_jax.rl.trainer``) and writes ``curves.md`` (means
over the first and last ``window`` steps and over consecutive windows) and ``curves.png``
(loss, the exact KL per action token, the KL and log-prob change split by advantage sign and
by header against input tokens, the header entropies, the shared format tokens' log-prob, the
candidate loss and reward per step kind, against the step).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Sequence

from spark_jax.core.jsonl import iter_jsonl

SPLITS = tuple(f"{sign}_{part}" for sign in ("pos", "neg") for part in ("header", "input"))
COLUMNS = ("loss", "kl", "kl_action_tokens", *(f"kl_{s}" for s in SPLITS), *(f"dlogp_{s}" for s in SPLITS),
           "header_entropy", "header_entropy_pooled", "header_kl", "format_logp", "cand_loss", "clip_frac",
           "entropy", "surrogate_gain", "reward_tool", "reward_cot", "reward_answer")
# (title, keys): one panel per title, one line per run and key
PANELS = (("loss", ("loss",)),
          ("exact KL to the reference per action token (nats)", ("kl_action_tokens",)),
          ("KL by advantage sign x header/input tokens", tuple(f"kl_{s}" for s in SPLITS)),
          ("log-prob change from the reference, same split", tuple(f"dlogp_{s}" for s in SPLITS)),
          ("header entropy: per state, pooled (nats)", ("header_entropy", "header_entropy_pooled")),
          ("mean log-prob of the shared format tokens", ("format_logp",)),
          ("clip fraction", ("clip_frac",)),
          ("entropy (nats/token)", ("entropy",)),
          ("data reward: tool steps", ("reward_tool",)))


def read_metrics(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {run_dir} a `spark-jax train` output directory?")
    return [row for _, row in iter_jsonl(path)]


def window_mean(rows: Sequence[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return sum(vals) / len(vals) if vals else None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def curves_table(runs: dict[str, list[dict]], window: int) -> str:
    """Markdown: per run and metric, first-window mean -> last-window mean, and each window's mean."""
    lines = [f"| run | steps | metric | first {window} -> last {window} | per {window}-step window |",
             "|---|---|---|---|---|"]
    for name, rows in runs.items():
        chunks = [rows[i:i + window] for i in range(0, len(rows), window)]
        for key in COLUMNS:
            if window_mean(rows, key) is None:
                continue
            per = ", ".join(_fmt(window_mean(c, key)) for c in chunks)
            ends = f"{_fmt(window_mean(rows[:window], key))} -> {_fmt(window_mean(rows[-window:], key))}"
            lines.append(f"| {name} | {rows[-1]['step'] if rows else 0} | {key} | {ends} | {per} |")
    return "\n".join(lines) + "\n"


def plot_curves(runs: dict[str, list[dict]], path: pathlib.Path, window: int) -> None:
    # deferred: matplotlib is slow to import and only the plots need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(16, 12))
    colors = {name: f"C{i}" for i, name in enumerate(runs)}  # one colour per run in every panel
    styles = ("-", "--", ":", "-.")  # one line style per key within a panel
    for ax, (title, keys) in zip(axes.ravel(), PANELS):
        for name, rows in runs.items():
            for key, style in zip(keys, styles):
                pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
                if not pts:
                    continue
                xs, ys = zip(*pts)
                ax.plot(xs, ys, alpha=0.25, linewidth=0.8, color=colors[name], linestyle=style)
                smooth = [sum(ys[max(0, i - window + 1):i + 1]) / len(ys[max(0, i - window + 1):i + 1])
                          for i in range(len(ys))]
                label = name if len(keys) == 1 else f"{name} {key}"
                ax.plot(xs, smooth, color=colors[name], linestyle=style, linewidth=2,
                        label=f"{label} ({window}-step mean)")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves(runs: dict[str, str | pathlib.Path], out: str | pathlib.Path, window: int) -> str:
    """Reads each ``NAME: run directory``, writes ``out/curves.md`` and ``out/curves.png``; returns the table."""
    rows = {name: read_metrics(directory) for name, directory in runs.items()}
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = curves_table(rows, window)
    (out / "curves.md").write_text(table)
    plot_curves(rows, out / "curves.png", window)
    return table