"""Judged steps per second: OpenAIJudge against a loopback server with fixed latency per call,
at concurrency C versus 1, in the same run. Prints one JSON line; the target ratio is >= 20x.

    python benchmarks/judge_throughput.py [--latency-ms 100] [--steps 256] [--concurrency 32]

Run from the repository root with the package importable (``PYTHONPATH=.`` in a worktree).
The server runs in a child process. The serial run judges ``--serial-steps`` steps (default steps / 8: at 100 ms per call it
would otherwise dominate the run); steps/s is what is compared. No cache, no retries.

What bounds the ratio: each step costs the client ~4-6 ms of CPU (almost all inside the openai
SDK: request building and transformation, httpx, response parsing; the judge's own prompt,
schema and validation work is ~0.1 ms), so the concurrent rate cannot exceed
1000 / client_cpu_ms_per_step steps/s, about 200/s on a free core: ~22x a 110 ms serial call.
On a CPU shared with other jobs the measured ratio is lower; ``client_cpu_ms_per_step`` and
``load_avg_1m`` in the output show how much.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import time

from spark_jax.judge.openai_judge import OpenAIJudge
from spark_jax.protocol.interfaces import JudgeRequest
from spark_jax.testing.openai_loopback import LoopbackOpenAIServer

ACTIONS = ("calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot")


def requests(n: int) -> list[JudgeRequest]:
    out = []
    for i in range(n):
        q = {"question_id": i, "question": f"What is {i} + {i + 1}?", "options": [str(2 * i + d) for d in range(4)],
             "category": "math"}
        msgs = [{"role": "user", "content": q["question"]},
                {"role": "assistant", "content": f"Action: cot\nInput: add {i} and {i + 1}"},
                {"role": "user", "content": "Observation: ok"}]
        out.append(JudgeRequest(q, msgs, i % 5, ACTIONS))
    return out


async def judge_all(judge: OpenAIJudge, reqs: list[JudgeRequest]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(judge.score(r) for r in reqs))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise RuntimeError(f"{len(bad)} judged steps failed, e.g. {bad[0]}")
    return elapsed, cpu


def serve(latency_s: float, conn) -> None:
    """Runs the loopback server in its own process (as a real API server would be: not
    sharing the client's interpreter lock) until the parent sends anything."""
    with LoopbackOpenAIServer(latency_s=latency_s) as srv:
        conn.send(srv.base_url)
        while True:
            msg = conn.recv()
            if msg == "stats":
                conn.send({"requests": len(srv.requests), "max_in_flight": srv.max_in_flight})
                srv.reset()
            else:
                return


def measure(base_url: str, conn, concurrency: int, n: int) -> dict:
    judge = OpenAIJudge("gpt-4o", base_url=base_url, api_key="bench", concurrency=concurrency, max_retries=0)

    async def main():
        await judge.score(requests(1)[0])  # warm up: client, connection, imports
        timed = await judge_all(judge, requests(n))
        await judge.aclose()
        return timed

    elapsed, cpu = asyncio.run(main())
    conn.send("stats")
    server = conn.recv()
    if server["requests"] != n + 1:
        raise RuntimeError(f"the server saw {server['requests']} requests, expected {n + 1}")
    return {"concurrency": concurrency, "steps": n, "seconds": round(elapsed, 3),
            "steps_per_s": round(n / elapsed, 2), "max_in_flight": server["max_in_flight"],
            # client-process CPU per step: with 2 cores shared, this bounds the concurrent rate
            "client_cpu_ms_per_step": round(1000 * cpu / n, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--serial-steps", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    serial_steps = args.serial_steps or max(8, args.steps // 8)
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(args.latency_ms / 1000.0, child), daemon=True)
    proc.start()
    try:
        base_url = parent.recv()
        serial = measure(base_url, parent, 1, serial_steps)
        parallel = measure(base_url, parent, args.concurrency, args.steps)
    finally:
        parent.send("stop")
        proc.join(timeout=10)
    print(json.dumps({
        "benchmark": "judge_throughput",
        "latency_ms": args.latency_ms,
        "serial": serial,
        "concurrent": parallel,
        "ratio": round(parallel["steps_per_s"] / serial["steps_per_s"], 2),
        "target_ratio": 20.0,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
