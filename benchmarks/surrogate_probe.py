"""Offline token surrogates on real Stage 1 data: a short training probe per surrogate.

Each surrogate (``ppo.surrogate``: awr, filtered, ppo_ref, ppo) trains for ``--steps`` optimizer
steps from the same SFT run (``init_from``, KL reference = that SFT policy) on the same Stage 1
data, seed and settings as the experiment's arms (``--config``, default the entropy experiment's).
The table compares what each update does to the policy, from the runs' own ``metrics.jsonl``:
the exact KL to the reference per action token, split by the sign of the advantage on input
tokens, the mean change in log-prob of negative-advantage input tokens, the log-prob of the shared
format tokens, and the per-state header entropy. This is a training probe (no evaluation): it
shows which surrogate keeps the policy near the data it starts from.

    PYTHONPATH=. .venv/bin/python benchmarks/surrogate_probe.py --stage1 RUN/stage1_lowest_viable \
        --init-from RUN/train_sft_lowest_viable --out PROBE_DIR [--steps 10] [--md table.md] [--json out.json]

Each run resumes from its own checkpoints; rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve()
SURROGATES = ("awr", "filtered", "ppo_ref", "ppo")
COLUMNS = (
    ("kl_action_tokens", "KL per action token, last step (nats)", "last"),
    ("kl_action_tokens", "KL per action token, max (nats)", "max"),
    ("kl_neg_input", "KL on A<0 input tokens, last (nats)", "last"),
    ("kl_pos_input", "KL on A>0 input tokens, last (nats)", "last"),
    ("dlogp_neg_input", "mean Δlog-prob of A<0 input tokens, last", "last"),
    ("format_logp", "format-token log-prob, first → last", "span"),
    ("header_entropy", "per-state header entropy, last (nats)", "last"),
)


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def summarize(rows: list[dict]) -> dict[str, object]:
    """The table's figures from one run's metrics rows (step order)."""
    def values(key):
        return [r.get(key) for r in rows if r.get(key) is not None and not math.isnan(r.get(key))]

    out: dict[str, object] = {"steps": len(rows)}
    for key, _, how in COLUMNS:
        v = values(key)
        if how == "last":
            out[f"{key}_last"] = v[-1] if v else None
        elif how == "max":
            out[f"{key}_max"] = max(v) if v else None
        else:
            out[f"{key}_first"], out[f"{key}_last"] = (v[0], v[-1]) if v else (None, None)
    out["kl_curve"] = [r.get("kl_action_tokens") for r in rows]
    out["step_time_s"] = sum(r.get("step_time_s", 0.0) for r in rows) / max(1, len(rows))
    return out


def table(results: dict[str, dict]) -> str:
    lines = ["| surrogate | steps | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---" * (2 + len(COLUMNS)) + "|"]
    for name, s in results.items():
        cells = []
        for key, _, how in COLUMNS:
            if how == "span":
                cells.append(f"{_fmt(s[f'{key}_first'])} → {_fmt(s[f'{key}_last'])}")
            else:
                cells.append(_fmt(s[f"{key}_{how}"]))
        lines.append(f"| {name} | {s['steps']} | " + " | ".join(cells) + " |")
    steps = max(len(s["kl_curve"]) for s in results.values())
    lines += ["", "KL to the reference per action token (nats), by step:", "",
              "| step | " + " | ".join(results) + " |", "|---" * (1 + len(results)) + "|"]
    for i in range(steps):
        lines.append(f"| {i + 1} | " + " | ".join(_fmt(s["kl_curve"][i] if i < len(s["kl_curve"]) else None)
                                               for s in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage1", required=True, help="a Stage 1 run directory (the rarity data)")
    ap.add_argument("--init-from", required=True, help="the SFT run every surrogate starts from")
    ap.add_argument("--out", required=True, help="one run per surrogate under this directory")
    ap.add_argument("--config", default=str(HERE.parents[1] / "configs/experiments/smollm2_entropy.yaml"))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--surrogates", default=",".join(SURROGATES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md", help="also write the Markdown table here")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="experiment config overrides, e.g. remat=true")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parents[1]))
    from spark_jax.apps import pipeline
    from spark_jax.apps.experiment import ExperimentConfig, train_config
    from spark_jax.core.config_io import load_config
    from spark_jax.core.jsonl import iter_jsonl

    cfg = load_config(ExperimentConfig, args.config, list(args.overrides))
    out = pathlib.Path(args.out)
    results, wall = {}, {}
    for name in args.surrogates.split(","):
        base = train_config(cfg, "ppo", pathlib.Path(args.stage1), pathlib.Path(args.init_from), seed=args.seed)
        tc = dataclasses.replace(base, steps=args.steps, ppo=dataclasses.replace(base.ppo, surrogate=name))
        print(f"\n== {name}: {args.steps} steps from {args.init_from}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        run = pipeline.train_arm(tc, out / name)
        wall[name] = time.perf_counter() - t
        rows = sorted((r for _, r in iter_jsonl(run / "metrics.jsonl")), key=lambda r: r["step"])
        results[name] = summarize(rows)
    md = table(results)
    md += (f"\n\n{args.steps} optimizer steps per surrogate ({cfg.updates_per_batch} updates per batch, "
           f"lr {cfg.lr}, kl_coef {cfg.kl_coef}, LoRA rank {cfg.lora_rank}), each from the same SFT run, "
           f"reference = that SFT policy, seed {args.seed}.")
    print(md)
    if args.md:
        pathlib.Path(args.md).write_text(md + "\n")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"results": results, "wall_s": wall, "steps": args.steps,
                                                       "config": dataclasses.asdict(cfg)}, indent=2))


if __name__ == "__main__":
    main()
