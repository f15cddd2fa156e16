"""Per-tool latency: median and p95 over N calls, one JSON line per tool, then a summary.

The python sandbox is measured three ways, with a plain `python -c pass` subprocess as the
reference measured in the same run:
  python_cold      a fresh sandboxed worker per call (prefork off)
  python_warm      prefork on, with a pause between calls (as in a rollout, where the model
                   generates between tool calls and the next worker is ready)
  python_b2b       prefork on, calls back to back (the next worker is still starting)

    python benchmarks/tools_latency.py --calls 100
    python benchmarks/tools_latency.py --calls 5      # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from _timing import percentile  # this folder (run as a script)

import spark_jax.tools as tools
from spark_jax.tools import ToolsConfig, run_tool
from spark_jax.tools.isolation.sandbox import close_pools

ARGS = {
    "calculator": "sqrt(2) * (3.5 + 4)^2 / log(10)",
    "python": "print(sum(i * i for i in range(1000)))",
    "sympy": "solve(x**2 - 5*x + 6, x)",
    "units": "3 atm * 2 L to J",
    "chemistry": "CuSO4(H2O)5",
    "constants": "boltzmann constant",
    "finance": "pmt(0.06/12, 360, 200000)",
    "search": "ideal gas constant",
    "cot": "Think about the units first.",
}


def measure(fn, calls: int, pause_s: float = 0.0) -> list[float]:
    fn()  # warm-up (imports, first index build, first worker)
    times = []
    for _ in range(calls):
        if pause_s:
            time.sleep(pause_s)
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def report(name: str, times: list[float], **extra) -> dict:
    line = {"tool": name, "median_ms": round(statistics.median(times), 3),
            "p95_ms": round(percentile(times, 0.95), 3), "n": len(times), **extra}
    print(json.dumps(line), flush=True)
    return line


def checked(name: str, arg: str):
    def call():
        r = run_tool(name, arg)
        if not r.ok:
            raise SystemExit(f"{name} failed during the benchmark: {r.error}")

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--pause", type=float, default=0.3, help="seconds between python_warm calls")
    ap.add_argument("--sympy-pause", type=float, default=2.0,
                    help="seconds between sympy calls (its warm worker imports sympy first)")
    args = ap.parse_args()

    ref = report("reference_python_subprocess", measure(
        lambda: subprocess.run([sys.executable, "-I", "-c", "pass"], check=True), args.calls))
    lines = {}
    tools.configure(ToolsConfig(search_corpus="demo", sandbox_prefork=True))
    for name in tools.TOOL_NAMES:
        if name in ("python", "sympy"):
            continue
        lines[name] = report(name, measure(checked(name, ARGS[name]), args.calls))
    lines["sympy"] = report("sympy", measure(checked("sympy", ARGS["sympy"]), args.calls, pause_s=args.sympy_pause),
                            note=f"prefork, {args.sympy_pause:g} s between calls")
    lines["python_warm"] = report("python", measure(checked("python", ARGS["python"]), args.calls,
                                                    pause_s=args.pause), mode="warm")
    lines["python_b2b"] = report("python", measure(checked("python", ARGS["python"]), args.calls),
                                 mode="back_to_back")
    close_pools()
    tools.configure(ToolsConfig(search_corpus="demo", sandbox_prefork=False))
    lines["python_cold"] = report("python", measure(checked("python", ARGS["python"]), args.calls),
                                  mode="cold")
    # The machine is shared: measure the reference again and use both, so that a load change
    # during the run does not masquerade as sandbox overhead.
    ref_end = report("reference_python_subprocess", measure(
        lambda: subprocess.run([sys.executable, "-I", "-c", "pass"], check=True), args.calls), when="end")
    ref_ms = (ref["median_ms"] + ref_end["median_ms"]) / 2
    print(json.dumps({
        "summary": True,
        "calls": args.calls,
        "reference_python_subprocess_median_ms": round(ref_ms, 3),
        "python_warm_median_ms": lines["python_warm"]["median_ms"],
        "python_warm_ratio_vs_reference": round(lines["python_warm"]["median_ms"] / ref_ms, 3),
        "python_cold_median_ms": lines["python_cold"]["median_ms"],
        "python_cold_ratio_vs_reference": round(lines["python_cold"]["median_ms"] / ref_ms, 3),
        "python_back_to_back_median_ms": lines["python_b2b"]["median_ms"],
        "python_start_under_300ms": lines["python_warm"]["p95_ms"] < 300,
    }), flush=True)


if __name__ == "__main__":
    main()
