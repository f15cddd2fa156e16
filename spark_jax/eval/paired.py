"""Seeds paired across arms: each arm's mean over seeds and paired differences with t intervals.

Every seed trains every arm on its own Stage 1 sample, LoRA initialisation and data order, and
all arms are evaluated on the same held-out questions, so a difference between two arms can be
taken seed by seed (``d_s = a_s - b_s``) and its uncertainty comes from the spread over seeds:
mean(d) ± t_{0.975, n-1} · sd(d) / sqrt(n), the paired t interval (none for a single seed).

That interval holds the held-out questions fixed: every seed answers the same ones, so it says
nothing about which questions were drawn, and with a few seeds it can even collapse (three equal
differences give a zero-width interval). Given the question rows, each difference also gets a
paired bootstrap interval over questions: one resample of the held-out questions, shared by both
arms and every seed, recomputes each figure (pooled entropy from the resampled action counts) and
the mean over seeds of the difference. A difference is read as shown only when both intervals
exclude 0 on the same side.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from spark_jax.eval.metrics import entropy_rows_bits, question_header_entropies_bits, tool_actions

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


def reading(a: str, b: str, ci95: Sequence[float] | None,
            ci95_questions: Sequence[float] | None | str = "not computed") -> str:
    """What the 95% paired intervals of ``a − b`` show: ``a > b`` or ``a < b`` when the interval
    over seeds excludes 0, and so does the one over questions when it was computed (any value but
    the default); ``no difference shown`` when either spans 0 or they disagree; ``no interval``
    with fewer than two seeds."""
    if ci95 is None:
        return "no interval"
    bounds = [ci95] if isinstance(ci95_questions, str) else [ci95, ci95_questions]
    if any(ci is None for ci in bounds):
        return "no difference shown"
    if all(ci[0] > 0 for ci in bounds):
        return f"{a} > {b}"
    if all(ci[1] < 0 for ci in bounds):
        return f"{a} < {b}"
    return "no difference shown"


# the figures a question resample can recompute, by summary key
QUESTION_LEVEL_KEYS = ("accuracy", "tool_entropy_bits", "header_entropy_bits")
QUESTION_BOOTSTRAP_RESAMPLES = 2000


def _aligned_rows(rows: Sequence[Mapping[str, Any]], ids: Sequence[Any], where: str) -> list[Mapping[str, Any]]:
    """``rows`` in the order of ``ids``; a ValueError naming ``where`` unless they are exactly those questions."""
    by_id = {r["question_id"]: r for r in rows}
    if len(by_id) != len(rows):
        raise ValueError(f"{where}: a question appears twice in the evaluation rows")
    missing, extra = [i for i in ids if i not in by_id], sorted(set(by_id) - set(ids), key=str)
    if missing or extra:
        raise ValueError(f"{where}: the evaluation rows are not the held-out questions the other systems answered "
                         f"(missing question_id {missing[:5]}, unexpected {extra[:5]})")
    return [by_id[i] for i in ids]


def resampled_figure(rows: Sequence[Mapping[str, Any]], key: str, weights: np.ndarray) -> np.ndarray:
    """``key``'s summary figure under each question resample: ``weights`` ``[R, Q]`` (how often each of
    the ``Q`` rows is drawn) -> ``[R]``, NaN where undefined (no tool call, no header scores).
    All-ones weights give :func:`spark_jax.eval.metrics.summarize_system`'s figure."""
    if key == "accuracy":
        correct = np.array([float(bool(r["correct"])) for r in rows])
        return weights @ correct / weights.sum(axis=1)
    if key == "tool_entropy_bits":
        names = sorted({a for r in rows for a in tool_actions(r)})
        counts = np.zeros((len(rows), len(names)))
        for i, r in enumerate(rows):
            for a in tool_actions(r):
                counts[i, names.index(a)] += 1
        return entropy_rows_bits(weights @ counts)
    if key == "header_entropy_bits":
        scored = np.array([float(bool(r.get("header_logprobs"))) for r in rows])
        # the metrics module's per-question mean, one row at a time to keep rows aligned (it skips unscored rows)
        per_question = np.array([sum(question_header_entropies_bits([r])) for r in rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            return (weights @ per_question) / (weights @ scored)
    raise ValueError(f"no question-level figure for {key!r}; known: {', '.join(QUESTION_LEVEL_KEYS)}")


def question_bootstrap_interval(rows_per_seed: Mapping[Any, Mapping[str, Sequence[Mapping[str, Any]]]], a: str,
                                b: str, key: str, seeds: Sequence[Any], n_boot: int = QUESTION_BOOTSTRAP_RESAMPLES,
                                rng_seed: int = 0, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of mean over ``seeds`` of (``a`` − ``b``)'s ``key`` when the held-out
    questions are resampled with replacement: one resample per replicate, shared by both systems and
    every seed (they answered the same questions). ``rows_per_seed``: ``{seed: {system: rows}}``.
    Replicates where a figure is undefined are dropped; None without seeds or defined replicates."""
    if not seeds:
        return None
    try:
        first = rows_per_seed[seeds[0]][a]
    except KeyError:
        raise ValueError(f"seed {seeds[0]}: no evaluation rows for {a}") from None
    ids = [r["question_id"] for r in first]
    q = len(ids)
    if q == 0:
        return None
    weights = np.random.default_rng(rng_seed).multinomial(q, np.full(q, 1.0 / q), size=n_boot).astype(np.float64)
    total = np.zeros(n_boot)
    for seed in seeds:
        for sign, name in ((1.0, a), (-1.0, b)):
            rows = (rows_per_seed.get(seed) or {}).get(name)
            if rows is None:
                raise ValueError(f"seed {seed}: no evaluation rows for {name}")
            total += sign * resampled_figure(_aligned_rows(rows, ids, f"seed {seed}, {name}"), key, weights)
    means = total[~np.isnan(total)] / len(seeds)
    if means.size == 0:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def paired_differences(per_seed: Mapping[Any, Mapping[str, Mapping[str, Any]]],
                       pairs: Sequence[tuple[str, str]], metrics=PAIRED_METRICS,
                       question_rows: Mapping[Any, Mapping[str, Sequence[Mapping[str, Any]]]] | None = None,
                       ) -> list[dict[str, Any]]:
    """One row per (pair, metric): the per-seed differences, their mean and 95% t interval.

    ``per_seed``: ``{seed: {system: summary}}`` (``report.json``'s ``systems`` of each seed). A seed
    where either side lacks the figure (e.g. no tool call: no pooled entropy) is left out of that
    row, and ``seeds`` says which ones count. With ``question_rows`` (``{seed: {system: evaluation
    rows}}``) each row also gets ``ci95_questions`` (:func:`question_bootstrap_interval` over those
    seeds), and ``reading`` needs both intervals.
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
            row = {"a": a, "b": b, "metric": label, "key": key, "seeds": seeds, "differences": diffs,
                   "mean": float(np.mean(diffs)) if diffs else None, "ci95": list(ci) if ci else None}
            if question_rows is None:
                row["reading"] = reading(a, b, ci)
            else:
                ciq = question_bootstrap_interval(question_rows, a, b, key, seeds)
                row["ci95_questions"] = list(ciq) if ciq else None
                row["reading"] = reading(a, b, ci, ciq)
            rows.append(row)
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
                        max_format_errors: float = ACTING_MAX_FORMAT_ERRORS,
                        question_rows: Mapping[Any, Mapping[str, Sequence[Mapping[str, Any]]]] | None = None,
                        ) -> dict[str, Any] | None:
    """The system that acts with the most diverse tools: among those whose mean format-error rate
    over seeds is at most ``max_format_errors`` and that call tools, the highest mean pooled tool
    entropy over seeds. Returns ``{"system", "tool_entropy_bits", "format_error_rate", "runner_up",
    "paired"}`` (``paired``: the pooled-entropy row of system − runner-up, None without a runner-up,
    with its interval over questions when ``question_rows`` is given), or None when no system acts."""
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
                                       metrics=(("pooled tool entropy (bits)", "tool_entropy_bits"),),
                                       question_rows=question_rows)
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
    over_questions = ""
    if "ci95_questions" in row:
        ciq = row["ci95_questions"]
        over_questions = " (seeds), " + ("-" if ciq is None else f"[{ciq[0]:.2f}, {ciq[1]:.2f}]") + " (questions)"
    return (text + f"; {row['a']} − {row['b']} (the next): {_fmt_ci(row['mean'], row['ci95'], False)}"
            f"{over_questions} bits, {'intervals show' if over_questions else 'interval shows'}: {row['reading']}.")


def paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per (difference, metric): mean over seeds [95% paired t interval], the 95%
    paired bootstrap interval over questions when the rows have one (``ci95_questions``), per seed,
    and what the intervals show (``reading``)."""
    questions = any("ci95_questions" in r for r in rows)
    head = "| difference | metric | mean [95% CI over seeds] | "
    head += "95% CI over questions | per seed | intervals show |" if questions else "per seed | interval shows |"
    lines = [head, "|---" * (6 if questions else 5) + "|"]
    for r in rows:
        pct = "%" in r["metric"]
        per = ", ".join(f"{s}: {_fmt(d, pct)}" for s, d in zip(r["seeds"], r["differences"])) or "-"
        cells = [f"{r['a']} − {r['b']}", r["metric"], _fmt_ci(r["mean"], r["ci95"], pct)]
        if questions:
            ciq = r.get("ci95_questions")
            cells.append("-" if ciq is None else f"[{_fmt(ciq[0], pct)}, {_fmt(ciq[1], pct)}]")
        lines.append("| " + " | ".join(cells + [per, r["reading"]]) + " |")
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
