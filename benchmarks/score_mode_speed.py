"""Evaluation speed (score mode, or generate with ``--mode``): this checkout against an older commit, timed alternately.

Each side is a worker process that imports ``spark_jax`` from its own checkout (``--base`` is
e.g. a ``git worktree add /tmp/base 9b98d75``), loads the model and evaluates chunks of held-out
MMLU-Pro questions on command with the experiment's agent settings (score mode, 2 policy actions,
64 input tokens, 96 answer tokens). After one untimed pass over the same questions (every shape
compiled on both sides), the chunks alternate: base chunk k, ours chunk k, base chunk k + 1, ...
so both sides see the same machine conditions. Both sides' seconds are split by phase (the older agent's scoring and
decoding calls are timed from outside; the newer one times its own phases). The script also checks that both sides give the same header log-probs on
every step whose state is identical on both sides (the first step always is).

    PYTHONPATH=. .venv/bin/python benchmarks/score_mode_speed.py --base /path/to/old/checkout \
        --data MMLU_PRO.jsonl [--questions 32] [--chunk 16] [--answer-mode letter] [--json out.json] [--md out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve()


def _worker(root: str, data: str, answer_mode: str | None, mode: str = "score") -> None:
    sys.path.insert(0, root)
    from spark_jax.cli.eval import select_questions
    from spark_jax.eval import agent as agent_mod
    from spark_jax.model.pretrained import load_pretrained

    heldout, _ = select_questions(data, "heldout", per_category=10, seed=0)
    by_id = {q["question_id"]: q for q in heldout}
    model = load_pretrained("embedded")
    kw = dict(max_steps=2, mode=mode, max_action_tokens=64, max_answer_tokens=96, observation_chars=600)
    if answer_mode is not None:
        kw["answer_mode"] = answer_mode
    config = agent_mod.AgentConfig(**kw)
    phase_seconds: dict[str, float] = {}

    def timed(fn, phase_of):
        def inner(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phase = phase_of(*a, **k)
                phase_seconds[phase] = phase_seconds.get(phase, 0.0) + time.perf_counter() - t
        return inner

    from spark_jax.tools import run_tool

    agent = agent_mod.PolicyAgent(model, config, name="base",
                                  tool_runner=timed(run_tool, lambda *a, **k: "tools"))
    if hasattr(agent, "phase_seconds"):
        phase_seconds = agent.phase_seconds  # the agent times its own phases (tools: wall of each batch)
        agent.tool_runner = run_tool
    else:  # the older agent: its scoring and decoding calls, timed from outside
        agent.score_actions = timed(agent.score_actions, lambda *a, **k: "header scoring (prefill + headers)")
        agent._decode = timed(agent._decode, lambda ids, max_new: "input decode (prefill + decode)"
                              if max_new == config.max_action_tokens else "final answer (prefill + decode)")
    print(json.dumps({"ready": True, "package": sys.modules["spark_jax"].__file__}), flush=True)
    for line in sys.stdin:
        ids = json.loads(line)["questions"]
        before = dict(phase_seconds)
        t0 = time.perf_counter()
        rows = agent.run([by_id[i] for i in ids])
        seconds = time.perf_counter() - t0
        phases = {k: v - before.get(k, 0.0) for k, v in phase_seconds.items()}
        print(json.dumps({"seconds": seconds, "phases": phases, "rows": [
            {"question_id": r["question_id"], "pred": r["pred"], "header_logprobs": r["header_logprobs"],
             "transcript": r["transcript"]} for r in rows]}), flush=True)


class _Side:
    def __init__(self, root: str, data: str, answer_mode: str | None, mode: str = "score"):
        cmd = [sys.executable, str(HERE), "--worker", "--root", root, "--data", data, "--mode", mode]
        if answer_mode is not None:
            cmd += ["--answer-mode", answer_mode]
        env = dict(os.environ, PYTHONPATH=root)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=root)
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"worker exited with {self.proc.wait()}")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, ids: list[int]) -> dict:
        self.proc.stdin.write(json.dumps({"questions": ids}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _same_state_steps(a: dict, b: dict) -> list[tuple[dict, dict]]:
    """(ours, base) header log-probs of the steps whose states are identical on both sides."""
    def states(row):
        t = row["transcript"]
        return [t[:i] for i, m in enumerate(t) if m["role"] == "assistant"]

    pairs = []
    for sa, sb, la, lb in zip(states(a), states(b), a["header_logprobs"], b["header_logprobs"]):
        if sa != sb:
            break
        pairs.append((la, lb))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="MMLU-Pro test JSONL (read at run time)")
    ap.add_argument("--base", help="checkout of the older commit")
    ap.add_argument("--questions", type=int, default=32, help="timed questions (a subset of the 140 held-out)")
    ap.add_argument("--chunk", type=int, default=16, help="questions per timed call (the agent's batch)")
    ap.add_argument("--answer-mode", default=None, help="ours: letter (default) or text")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--md", help="also write the Markdown table here")
    ap.add_argument("--mode", default="score", choices=("score", "generate"), help="the agent mode, both sides")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.root, args.data, args.answer_mode, args.mode)
        return
    if not args.base:
        ap.error("--base is required")
    sys.path.insert(0, str(HERE.parents[1]))
    from spark_jax.cli.eval import select_questions

    heldout, _ = select_questions(args.data, "heldout", per_category=10, seed=0)
    step = max(1, len(heldout) // args.questions)
    timed = [q["question_id"] for q in heldout[::step]][:args.questions]
    base = _Side(str(pathlib.Path(args.base).resolve()), args.data, None, args.mode)
    ours = _Side(str(HERE.parents[1]), args.data, args.answer_mode, args.mode)
    for start in range(0, len(timed), args.chunk):  # an untimed pass first: every shape compiled
        base.run(timed[start:start + args.chunk]), ours.run(timed[start:start + args.chunk])
    times = {"base": [], "ours": []}
    phases: dict[str, dict[str, float]] = {"base": {}, "ours": {}}
    rows = {"base": {}, "ours": {}}
    for start in range(0, len(timed), args.chunk):
        chunk = timed[start:start + args.chunk]
        for name, side in (("base", base), ("ours", ours)):
            got = side.run(chunk)
            times[name].append(got["seconds"])
            for k, v in got["phases"].items():
                phases[name][k] = phases[name].get(k, 0.0) + v
            rows[name].update({r["question_id"]: r for r in got["rows"]})
    base.close(), ours.close()
    worst, compared = 0.0, 0
    for qid in timed:
        for la, lb in _same_state_steps(rows["ours"][qid], rows["base"][qid]):
            worst = max(worst, max(abs(la[k] - lb[k]) for k in lb))
            compared += 1
    n = len(timed)
    result = {
        "benchmark": f"{args.mode}_mode_eval_per_question", "mode": args.mode, "questions": n, "chunk": args.chunk,
        "answer_mode_ours": args.answer_mode or "default",
        "base_s_per_question": round(sum(times["base"]) / n, 3), "ours_s_per_question": round(sum(times["ours"]) / n, 3),
        "speedup": round(sum(times["base"]) / sum(times["ours"]), 2),
        "chunk_speedups": [round(b / o, 2) for b, o in zip(times["base"], times["ours"])],
        "phases_s": {name: {**{k: round(v, 2) for k, v in phases[name].items()},
                            "host (rest)": round(sum(times[name]) - sum(phases[name].values()), 2)}
                     for name in ("base", "ours")},
        "header_steps_compared": compared, "max_abs_header_logprob_diff": worst,
        "same_transcripts": sum(rows["ours"][q]["transcript"] == rows["base"][q]["transcript"] for q in timed),
        "answered_base": sum(r["pred"] is not None for r in rows["base"].values()),
        "answered_ours": sum(r["pred"] is not None for r in rows["ours"].values()),
        "packages": {"base": base.info["package"], "ours": ours.info["package"]},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    if args.md:
        pathlib.Path(args.md).write_text(markdown(result))


def markdown(result: dict) -> str:
    """The result as the Markdown that docs/performance.md quotes: seconds per phase, both sides."""
    n = result["questions"]
    lines = [f"| phase | base: s per question | ours: s per question |", "|---|---|---|"]
    names = list(dict.fromkeys(list(result["phases_s"]["base"]) + list(result["phases_s"]["ours"])))
    for k in names:
        b, o = result["phases_s"]["base"].get(k), result["phases_s"]["ours"].get(k)
        lines.append(f"| {k} | {'-' if b is None else f'{b / n:.2f}'} | {'-' if o is None else f'{o / n:.2f}'} |")
    lines.append(f"| **total** | **{result['base_s_per_question']:.2f}** | **{result['ours_s_per_question']:.2f}** |")
    lines += ["", f"{n} questions, chunks of {result['chunk']}, timed alternately after an untimed pass; "
              f"speedup **{result['speedup']}x** (per chunk: {result['chunk_speedups']}); answered: base "
              f"{result['answered_base']}/{n}, ours {result['answered_ours']}/{n} (answer mode: "
              f"{result['answer_mode_ours']}); " + (
                  f"header log-probs on {result['header_steps_compared']} steps with identical states differ by at "
                  f"most {result['max_abs_header_logprob_diff']:.1e}." if result.get("mode", "score") == "score" else
                  f"{result['mode']} mode; identical transcripts on both sides: {result['same_transcripts']}/{n}."),
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
