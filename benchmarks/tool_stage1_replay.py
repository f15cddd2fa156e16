"""A real Stage 1 run's tool calls, replayed: the tools' share of the run's wall time, and what a
change to the tools does to Stage 1 throughput.

Reads RUN_DIR's shards (records with ``selected`` and ``tool_input``) and manifest (the run's
wall time ``stats.seconds``, ``config.concurrency``, ``config.tool_timeout_s``) and replays
every tool call through ``run_tool`` as the run issued them: step by step, the calls of one
(shard, step) together on ``concurrency`` threads (the driver gathers them before the next
step, so their time adds to the run's). Each replay is a fresh process, so first-call costs
(imports, worker start-up) count as they did in the run.

With ``--before DIR``, DIR holding another ``spark_jax`` package (say a copy of the checkout
before a change), each round replays both sides, alternating, so both see the same machine.
The summary gives each side's tool wall time (median over rounds), its share of the run's wall
time, and the run's projected throughput after against before:
``seconds / (seconds - tools_before + tools_after) - 1``.

    .venv/bin/python benchmarks/tool_stage1_replay.py RUN_DIR --before BEFORE_DIR --rounds 3
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_calls(run_dir: pathlib.Path) -> list[list[dict]]:
    """Tool calls grouped by (shard, step), in run order."""
    groups: dict[tuple, list[dict]] = collections.OrderedDict()
    for shard in sorted((run_dir / "shards").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("tool_input") is not None:
                groups.setdefault((shard.name, rec["step"]), []).append(rec)
    return list(groups.values())


def replay(run_dir: pathlib.Path, package_root: str) -> dict:
    """One replay in this process, with spark_jax imported from ``package_root``."""
    sys.path.insert(0, package_root)
    import spark_jax.tools as tools

    manifest = json.loads((run_dir / "manifest.json").read_text())
    config = manifest.get("config", {})
    timeout = config.get("tool_timeout_s")
    groups = load_calls(run_dir)
    per_tool: dict[str, list[float]] = collections.defaultdict(list)
    agree = 0

    def call(rec):
        t = time.perf_counter()
        r = tools.run_tool(rec["selected"], rec["tool_input"], timeout_s=timeout)
        per_tool[rec["selected"]].append(time.perf_counter() - t)
        return (not r.ok) == str(rec.get("observation") or "").startswith("Error:")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=int(config.get("concurrency") or 8)) as pool:
        for group in groups:
            agree += sum(pool.map(call, group))
    wall = time.perf_counter() - start
    return {
        "package": os.path.dirname(tools.__file__),
        "calls": sum(len(g) for g in groups),
        "tool_wall_s": round(wall, 3),
        "ok_status_as_recorded": agree,
        "seconds_by_tool": {k: round(sum(v), 3) for k, v in sorted(per_tool.items())},
    }


def run_side(run_dir: pathlib.Path, package_root: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, str(run_dir), "--replay-in", package_root],
        capture_output=True, text=True, check=True, cwd="/",
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=pathlib.Path)
    ap.add_argument("--before", help="a directory holding the spark_jax package to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replay-in", help=argparse.SUPPRESS)  # internal: one replay, this package
    args = ap.parse_args()
    if args.replay_in:
        print(json.dumps(replay(args.run_dir, args.replay_in)), flush=True)
        return
    manifest = json.loads((args.run_dir / "manifest.json").read_text())
    seconds = float(manifest["stats"]["seconds"])
    sides = {"after": str(REPO)} | ({"before": args.before} if args.before else {})
    walls: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for side, root in sides.items():
            line = run_side(args.run_dir, root) | {"side": side}
            print(json.dumps(line), flush=True)
            walls[side].append(line["tool_wall_s"])
    summary = {"summary": True, "run_seconds": seconds, "rounds": args.rounds,
               "stage1_steps": sum(s["records"] for s in manifest.get("shards", [])) or None}
    for side, values in walls.items():
        summary[f"{side}_tool_wall_s"] = round(statistics.median(values), 3)
        summary[f"{side}_tool_share"] = round(statistics.median(values) / seconds, 5)
    if "before" in walls:
        projected = seconds - summary["before_tool_wall_s"] + summary["after_tool_wall_s"]
        summary["projected_run_seconds_after"] = round(projected, 1)
        summary["throughput_change"] = round(seconds / projected - 1, 5)
        summary["within_5_percent"] = summary["throughput_change"] > -0.05
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
