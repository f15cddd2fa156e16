"""``spark-jax curves``: training curves of one or more runs as a Markdown table and a PNG."""

from __future__ import annotations

import argparse
import pathlib

from spark_jax.rl.curves import write_curves


def register(sub) -> None:
    p = sub.add_parser("curves", help="training curves of `spark-jax train` runs: Markdown table + PNG")
    p.add_argument("runs", nargs="+", metavar="NAME=DIR", help="runs to compare (NAME= is optional)")
    p.add_argument("--out", required=True, help="directory for curves.md and curves.png")
    p.add_argument("--window", type=int, default=20, help="steps per window (default 20)")
    p.set_defaults(func=run_curves)


def run_curves(args: argparse.Namespace) -> int:
    runs = {}
    for spec in args.runs:
        name, _, directory = spec.rpartition("=")
        directory = directory or spec
        runs[name or pathlib.Path(directory).name] = directory
    out = pathlib.Path(args.out)
    print(write_curves(runs, out, args.window))
    print(f"wrote {out / 'curves.md'} and {out / 'curves.png'}")
    return 0
