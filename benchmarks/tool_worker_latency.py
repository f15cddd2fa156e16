"""Warm-call latency of the host-side tools in their killable worker process, against the old
in-process path (``Tool.run_here``), timed alternately in the same run.

Calculator, units, finance, chemistry, constants and search run in a worker process
(spark_jax.tools.isolation.tool_worker) so that a runaway input can be stopped. A warm call adds a
pipe round trip and JSON both ways; the target is a median under 10 ms for calculator, units and
finance. Calls alternate worker, in-process, worker, ... (``_timing.interleaved_times``, one
untimed call of each first, which also starts the worker), so both sides see the same machine.
One JSON line per tool, then a summary.

    .venv/bin/python benchmarks/tool_worker_latency.py [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import statistics

from _timing import interleaved_times, percentile  # this folder (run as a script)

import spark_jax.tools as tools
from spark_jax.tools import TOOLS, ToolsConfig, run_tool

ARGS = {
    "calculator": "sqrt(2) * (3.5 + 4)^2 / log(10)",
    "units": "3 atm * 2 L to J",
    "finance": "pmt(0.06/12, 360, 200000)",
    "chemistry": "CuSO4(H2O)5",
    "constants": "boltzmann constant",
    "search": "ideal gas constant",
}
TARGETED = ("calculator", "units", "finance")
TARGET_MS = 10.0


def checked(fn, name: str):
    def call():
        r = fn(name, ARGS[name]) if fn is run_tool else fn(ARGS[name])
        if not r.ok:
            raise SystemExit(f"{name} failed during the benchmark: {r.error}")

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    tools.configure(ToolsConfig(search_corpus="demo"))
    summary = {"summary": True, "calls": args.calls, "target_median_ms": TARGET_MS}
    for name in ARGS:
        worker_s, local_s = interleaved_times(checked(run_tool, name), checked(TOOLS[name].run_here, name),
                                              args.calls)
        worker = [t * 1000 for t in worker_s]
        local = [t * 1000 for t in local_s]
        line = {
            "tool": name,
            "worker_median_ms": round(statistics.median(worker), 3),
            "worker_p95_ms": round(percentile(worker, 0.95), 3),
            "in_process_median_ms": round(statistics.median(local), 3),
            "in_process_p95_ms": round(percentile(local, 0.95), 3),
            "overhead_median_ms": round(statistics.median(worker) - statistics.median(local), 3),
        }
        print(json.dumps(line), flush=True)
        summary[f"{name}_worker_median_ms"] = line["worker_median_ms"]
    summary["targets_met"] = all(summary[f"{n}_worker_median_ms"] < TARGET_MS for n in TARGETED)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
