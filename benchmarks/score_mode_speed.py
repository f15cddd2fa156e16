"""Score-mode evaluation speed: this checkout against an older commit, timed alternately.

Each side is a worker process that imports ``spark_jax`` from its own checkout (``--base`` is
e.g. a ``git worktree add /tmp/base 9b98d75``), loads the model and evaluates chunks of held-out
MMLU-Pro questions on command with the experiment's agent settings (score mode, 2 policy actions,
64 input tokens, 96 answer tokens). After one untimed warm-up chunk each (compilation), the
chunks alternate: base chunk k, ours chunk k, base chunk k + 1, ... so both sides see the same
machine conditions. The script also checks that both sides give the same header log-probs on
every step whose state is identical on both sides (the first step always is).

    PYTHONPATH=. .venv/bin/python benchmarks/score_mode_speed.py --base /path/to/old/checkout \
        --data MMLU_PRO.jsonl [--questions 32] [--chunk 16] [--answer-mode letter] [--json out.json]
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


def _worker(root: str, data: str, answer_mode: str | None) -> None:
    sys.path.insert(0, root)
    from spark_jax.cli.eval import select_questions
    from spark_jax.eval import agent as agent_mod
    from spark_jax.model.pretrained import load_pretrained

    heldout, _ = select_questions(data, "heldout", per_category=10, seed=0)
    by_id = {q["question_id"]: q for q in heldout}
    model = load_pretrained("embedded")
    kw = dict(max_steps=2, mode="score", max_action_tokens=64, max_answer_tokens=96, observation_chars=600)
    if answer_mode is not None:
        kw["answer_mode"] = answer_mode
    agent = agent_mod.PolicyAgent(model, agent_mod.AgentConfig(**kw), name="base")
    print(json.dumps({"ready": True, "package": sys.modules["spark_jax"].__file__}), flush=True)
    for line in sys.stdin:
        ids = json.loads(line)["questions"]
        t0 = time.perf_counter()
        rows = agent.run([by_id[i] for i in ids])
        seconds = time.perf_counter() - t0
        print(json.dumps({"seconds": seconds, "rows": [
            {"question_id": r["question_id"], "pred": r["pred"], "header_logprobs": r["header_logprobs"],
             "transcript": r["transcript"]} for r in rows]}), flush=True)


class _Side:
    def __init__(self, root: str, data: str, answer_mode: str | None):
        cmd = [sys.executable, str(HERE), "--worker", "--root", root, "--data", data]
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
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.root, args.data, args.answer_mode)
        return
    if not args.base:
        ap.error("--base is required")
    sys.path.insert(0, str(HERE.parents[1]))
    from spark_jax.cli.eval import select_questions

    heldout, _ = select_questions(args.data, "heldout", per_category=10, seed=0)
    step = max(1, len(heldout) // (args.questions + args.chunk))
    ids = [q["question_id"] for q in heldout[::step]]
    warm, timed = ids[:args.chunk], ids[args.chunk:args.chunk + args.questions]
    base = _Side(str(pathlib.Path(args.base).resolve()), args.data, None)
    ours = _Side(str(HERE.parents[1]), args.data, args.answer_mode)
    base.run(warm), ours.run(warm)  # compilation, untimed
    times = {"base": [], "ours": []}
    rows = {"base": {}, "ours": {}}
    for start in range(0, len(timed), args.chunk):
        chunk = timed[start:start + args.chunk]
        for name, side in (("base", base), ("ours", ours)):
            got = side.run(chunk)
            times[name].append(got["seconds"])
            rows[name].update({r["question_id"]: r for r in got["rows"]})
    base.close(), ours.close()
    worst, compared = 0.0, 0
    for qid in timed:
        for la, lb in _same_state_steps(rows["ours"][qid], rows["base"][qid]):
            worst = max(worst, max(abs(la[k] - lb[k]) for k in lb))
            compared += 1
    n = len(timed)
    result = {
        "benchmark": "score_mode_eval_per_question", "questions": n, "chunk": args.chunk,
        "answer_mode_ours": args.answer_mode or "default",
        "base_s_per_question": round(sum(times["base"]) / n, 3), "ours_s_per_question": round(sum(times["ours"]) / n, 3),
        "speedup": round(sum(times["base"]) / sum(times["ours"]), 2),
        "chunk_speedups": [round(b / o, 2) for b, o in zip(times["base"], times["ours"])],
        "header_steps_compared": compared, "max_abs_header_logprob_diff": worst,
        "answered_base": sum(r["pred"] is not None for r in rows["base"].values()),
        "answered_ours": sum(r["pred"] is not None for r in rows["ours"].values()),
        "packages": {"base": base.info["package"], "ours": ours.info["package"]},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
