"""Where a score-mode evaluation's seconds go: agent phases x model executables.

Runs one ``PolicyAgent`` evaluation (the experiment's settings: 2 policy actions, 64 input
tokens, 96 answer tokens) on held-out MMLU-Pro questions and splits its wall time two ways:

- by agent phase: header scoring, input decode, final answer, tools, and host (the rest:
  prompt rendering, tokenising, parsing);
- by model executable (``PretrainedModel._jit`` keys: ``score``, ``prefix``, ``prefill_prefix``,
  ``decode_loop``, ...), each call timed to completion; the first call of a shape counts as
  ``compile``.

``--root`` imports the package from another checkout (e.g. a ``git worktree`` of an older
commit), so the same script profiles the code before and after a change.

    PYTHONPATH=. .venv/bin/python benchmarks/score_mode_profile.py --data MMLU_PRO.jsonl \
        [--questions 28] [--root /path/to/checkout] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time


def _questions(data: str, n: int):
    from spark_jax.cli.eval import select_questions

    heldout, _ = select_questions(data, "heldout", per_category=10, seed=0)  # the experiment's 140
    step = max(1, len(heldout) // n)
    return heldout[::step][:n]


def profile(data: str, n: int, model_name: str = "embedded") -> dict:
    import jax

    from spark_jax.eval import agent as agent_mod
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.tools import run_tool

    model = load_pretrained(model_name)
    questions = _questions(data, n)
    kernels: collections.Counter = collections.Counter()
    phases: collections.Counter = collections.Counter()
    seen: set = set()
    jit = model._jit

    def timed_jit(key, *a, **kw):
        fn = jit(key, *a, **kw)

        def call(*args):
            t = time.perf_counter()
            out = jax.block_until_ready(fn(*args))
            name = key[0] if (key in seen) else "compile"
            seen.add(key)
            kernels[name] += time.perf_counter() - t
            return out
        return call

    model._jit = timed_jit
    cfg_kw = dict(max_steps=2, mode="score", max_action_tokens=64, max_answer_tokens=96, observation_chars=600)
    config = agent_mod.AgentConfig(**cfg_kw)

    def timed_tool(*a, **kw):
        t = time.perf_counter()
        try:
            return run_tool(*a, **kw)
        finally:
            phases["tools (sum of calls)"] += time.perf_counter() - t

    agent = agent_mod.PolicyAgent(model, config, tool_runner=timed_tool, name="base")
    if not hasattr(agent, "phase_seconds"):  # the code before the agent timed its own phases
        def wrap(obj, name, phase_of):
            orig = getattr(obj, name)

            def inner(*a, **kw):
                t = time.perf_counter()
                try:
                    return orig(*a, **kw)
                finally:
                    phases[phase_of(*a, **kw)] += time.perf_counter() - t
            setattr(obj, name, inner)
        wrap(agent, "score_actions", lambda *a, **k: "header scoring")
        wrap(agent, "_decode", lambda ids, max_new: "input decode" if max_new == config.max_action_tokens
             else "final answer")
    t0 = time.perf_counter()
    rows = agent.run(questions)
    wall = time.perf_counter() - t0
    if hasattr(agent, "phase_seconds"):
        phases.update(agent.phase_seconds)
    measured = sum(v for k, v in phases.items() if not k.startswith("tools (sum")) + (
        0.0 if "tools" in phases else phases["tools (sum of calls)"])
    phases["host (rest)"] = wall - measured
    answered = sum(r["pred"] is not None for r in rows)
    return {"questions": len(questions), "wall_s": round(wall, 2), "s_per_question": round(wall / len(questions), 3),
            "phases_s": {k: round(v, 2) for k, v in phases.items()},
            "kernels_s": {k: round(v, 2) for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])},
            "answered": answered, "tool_calls": sum(len(r["actions"]) - 1 for r in rows),
            "session_restarts": getattr(agent, "session_restarts", None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="MMLU-Pro test JSONL (read at run time)")
    ap.add_argument("--questions", type=int, default=28)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--root", help="import spark_jax from this checkout instead")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    if args.root:
        sys.path.insert(0, args.root)
    result = profile(args.data, args.questions, args.model)
    import spark_jax

    result["package"] = spark_jax.__file__
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
