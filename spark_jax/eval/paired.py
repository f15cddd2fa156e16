"""Seeds paired across arms: each arm's mean over seeds and paired differences with t intervals.

Every seed trains every arm on its own Stage 1 sample, LoRA initialisation and data order, and
all arms are evaluated on the same held-out questions, so a difference between two arms can be
taken seed by seed (``d_s = a_s - b_s``) and its uncertainty comes from the spread over seeds:
mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n), the paired t interval (none for a single seed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

# (label, summary key) of the figures the claim rests on, in table order
PAIRED_METRICS = (
    ("pooled tool entropy (bits)", "tool_entropy_bits"),
    ("per-state header entropy (bits)", "header_entropy_bits"),
    ("accuracy (%, official)", "accuracy"),
)
MEAN_METRICS = PAIRED_METRICS + (("answered (%)", "answered_rate"), ("format errors (%)", "format_error_rate"),
                                  ("tool calls per question", "tool_calls_per_question"))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean of ``values``; None for fewer than two values."""
    from scipy import stats  # deferred: scipy is slow to import and only the tables need it

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    m = float(x.mean())
    return m - half, m + half


def claim_pairs(systems: Sequence[str]) -> list[tuple[str, str]]:
    """The differences SPaRK's claim rests on, among ``systems``, in this order: PPO-rarity −
    SFT-rarity and SFT-rarity − SFT-greedy; each warm-started arm ``<A>-<data>-from-<B>`` minus
    its source ``<B>-<data>`` and minus the compute-matched ``SFT-<data>-from-SFT`` (the same
    updates and tokens); then each arm − base."""
    pairs = [("PPO-rarity", "SFT-rarity"), ("SFT-rarity", "SFT-greedy")]
    for s in systems:
        head, sep, source_algo = s.rpartition("-from-")
        if not sep or "-" not in head:
            continue
        data = head.split("-", 1)[1]
        pairs.append((s, f"{source_algo}-{data}"))
        pairs.append((s, f"SFT-{data}-from-SFT"))
    pairs += [(s, "base") for s in systems if s != "base"]
    seen: set[tuple[str, str]] = set()
    kept = []
    for a, b in pairs:
        if a != b and a in systems and b in systems and (a, b) not in seen:
            seen.add((a, b))
            kept.append((a, b))
    return kept


def reading(a: str, b: str, ci95: Sequence[float] | None) -> str:
    """What the 95% paired interval of ``a − b`` shows: ``a > b`` or ``a < b`` when it excludes 0,
    ``no difference shown`` when it spans 0, ``no interval`` with fewer than two seeds."""
    if ci95 is None:
        return "no interval"
    lo, hi = ci95
    if lo > 0:
        return f"{a} > {b}"
    if hi < 0:
        return f"{a} < {b}"
    return "no difference shown"


def paired_differences(per_seed: Mapping[Any, Mapping[str, Mapping[str, Any]]],
                       pairs: Sequence[tuple[str, str]], metrics=PAIRED_METRICS) -> list[dict[str, Any]]:
    """One row per (pair, metric): the per-seed differences, their mean and 95% t interval.

    ``per_seed``: ``{seed: {system: summary}}`` (``report.json``'s ``systems`` of each seed). A seed
    where either side lacks the figure (e.g. no tool call: no pooled entropy) is left out of that
    row, and ``seeds`` says which ones count.
    """
    rows = []
    for a, b in pairs:
        for label, key in metrics:
            diffs, seeds = [], []
            for seed, systems in per_seed.items():
                va, vb = (systems.get(a) or {}).get(key), (systems.get(b) or {}).get(key)
                if va is not None and vb is not None:
                    diffs.append(float(va) - float(vb))
                    seeds.append(seed)
            ci = t_interval(diffs)
            rows.append({"a": a, "b": b, "metric": label, "key": key, "seeds": seeds, "differences": diffs,
                         "mean": float(np.mean(diffs)) if diffs else None, "ci95": list(ci) if ci else None,
                         "reading": reading(a, b, ci)})
    return rows


def seed_means(per_seed: Mapping[Any, Mapping[str, Mapping[str, Any]]], metrics=MEAN_METRICS) -> dict[str, dict]:
    """``{system: {key: {"mean", "ci95", "n"}}}`` over the seeds that have the figure."""
    systems: list[str] = []
    for s in per_seed.values():
        systems += [n for n in s if n not in systems]
    out: dict[str, dict] = {}
    for name in systems:
        out[name] = {}
        for _, key in metrics:
            vals = [float(s[name][key]) for s in per_seed.values() if name in s and s[name].get(key) is not None]
            ci = t_interval(vals)
            out[name][key] = {"mean": float(np.mean(vals)) if vals else None, "ci95": list(ci) if ci else None,
                              "n": len(vals)}
    return out


def _fmt(x: float | None, pct: bool) -> str:
    return "-" if x is None else (f"{100 * x:.1f}" if pct else f"{x:.2f}")


def _fmt_ci(v: float | None, ci: Sequence[float] | None, pct: bool) -> str:
    return _fmt(v, pct) + ("" if ci is None else f" [{_fmt(ci[0], pct)}, {_fmt(ci[1], pct)}]")


def means_table(means: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics=MEAN_METRICS) -> str:
    """Markdown: one row per system, each figure's mean over seeds [95% t interval over seeds]."""
    head = "| system | seeds | " + " | ".join(f"{label} [95% CI over seeds]" for label, _ in metrics) + " |"
    lines = [head, "|---" * (2 + len(metrics)) + "|"]
    for name, m in means.items():
        n = max((v["n"] for v in m.values()), default=0)
        cells = [_fmt_ci(m[key]["mean"], m[key]["ci95"], "%" in label) for label, key in metrics]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# a system "acts" in generate mode when at most this share of its policy turns are format errors
ACTING_MAX_FORMAT_ERRORS = 0.05


def most_diverse_acting(per_seed: Mapping[Any, Mapping[str, Mapping[str, Any]]],
                        max_format_errors: float = ACTING_MAX_FORMAT_ERRORS) -> dict[str, Any] | None:
    """The system that acts with the most diverse tools: among those whose mean format-error rate
    over seeds is at most ``max_format_errors`` and that call tools, the highest mean pooled tool
    entropy over seeds. Returns ``{"system", "tool_entropy_bits", "format_error_rate", "runner_up",
    "paired"}`` (``paired``: the pooled-entropy row of system − runner-up, None without a runner-up),
    or None when no system acts."""
    means = seed_means(per_seed, metrics=(("", "tool_entropy_bits"), ("", "format_error_rate")))
    acting = sorted(((m["tool_entropy_bits"]["mean"], name) for name, m in means.items()
                     if m["tool_entropy_bits"]["mean"] is not None and m["format_error_rate"]["mean"] is not None
                     and m["format_error_rate"]["mean"] <= max_format_errors), reverse=True)
    if not acting:
        return None
    (entropy, best), runner_up = acting[0], (acting[1][1] if len(acting) > 1 else None)
    paired = None
    if runner_up is not None:
        (paired,) = paired_differences(per_seed, [(best, runner_up)],
                                       metrics=(("pooled tool entropy (bits)", "tool_entropy_bits"),))
    return {"system": best, "tool_entropy_bits": entropy,
            "format_error_rate": means[best]["format_error_rate"]["mean"], "runner_up": runner_up, "paired": paired}


def most_diverse_acting_text(choice: Mapping[str, Any] | None, mode: str) -> str:
    """One Markdown line naming ``most_diverse_acting``'s choice and how far the runner-up is."""
    rule = (f"{mode} mode; systems with at most {100 * ACTING_MAX_FORMAT_ERRORS:.0f}% format errors, highest mean "
            "pooled tool entropy over seeds")
    if choice is None:
        return f"**Acting with the most diverse tools** ({rule}): no system acts."
    text = (f"**Acting with the most diverse tools** ({rule}): {choice['system']}, "
            f"{choice['tool_entropy_bits']:.2f} bits")
    row = choice["paired"]
    if row is None:
        return text + "; no other system acts."
    return (text + f"; {row['a']} − {row['b']} (the next): {_fmt_ci(row['mean'], row['ci95'], False)} bits, "
            f"interval shows: {row['reading']}.")


def paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per (difference, metric): mean over seeds [95% paired t interval], per seed,
    and what the interval shows (``reading``)."""
    lines = ["| difference | metric | mean [95% CI over seeds] | per seed | interval shows |", "|---|---|---|---|---|"]
    for r in rows:
        pct = "%" in r["metric"]
        per = ", ".join(f"{s}: {_fmt(d, pct)}" for s, d in zip(r["seeds"], r["differences"])) or "-"
        lines.append(f"| {r['a']} − {r['b']} | {r['metric']} | {_fmt_ci(r['mean'], r['ci95'], pct)} | {per} | "
                     f"{r['reading']} |")
    return "\n".join(lines)


def plot_seeds(path, per_seed: Mapping[Any, Mapping[str, Mapping[str, Any]]], title: str,
               metrics=MEAN_METRICS) -> None:
    """One panel per figure: each system's value per seed (dots) and its mean over seeds with the
    95% t interval (bar and whiskers), written as a PNG to ``path``."""
    import matplotlib  # deferred: slow to import and only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = seed_means(per_seed, metrics)
    names = list(means)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 4.6), squeeze=False)
    for ax, (label, key) in zip(axes[0], metrics):
        scale = 100.0 if "%" in label else 1.0
        for i, name in enumerate(names):
            m = means[name][key]
            if m["mean"] is None:
                continue
            ax.bar(i, scale * m["mean"], 0.6, color="tab:blue" if name != "base" else "tab:gray", alpha=0.35)
            if m["ci95"] is not None:
                lo, hi = (scale * v for v in m["ci95"])
                ax.errorbar(i, scale * m["mean"], yerr=[[scale * m["mean"] - lo], [hi - scale * m["mean"]]],
                            color="black", capsize=4)
            vals = [scale * float(s[name][key]) for s in per_seed.values()
                    if name in s and s[name].get(key) is not None]
            ax.scatter(np.full(len(vals), i) + np.linspace(-0.12, 0.12, len(vals)), vals, s=14, color="tab:blue",
                       zorder=3)
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title}: per seed (dots), mean over seeds with 95% t interval", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
