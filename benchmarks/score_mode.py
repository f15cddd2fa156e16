"""Score mode per question: cached header scoring against a reference way.

One question = the ten action headers ranked after a Stage 1 state. Ways:
- ``prefix`` (the agent's): the system prompt's cache is computed once and reused; each state's
  remaining tokens are prefilled after it, then the ten headers run against that cache;
- ``whole_prompt``: the whole state is prefilled once per question, then the ten headers
  (``PretrainedModel.score_continuations`` without ``prefix_len``);
- ``full_sequence``: ten full sequences with all their logits copied back (the score mode before
  the cached one, ``spark_jax.testing.score_reference``).
Both sides are timed alternately on the same states, after one untimed call each (compilation);
the script also checks that both give the same log-probs.

    PYTHONPATH=. .venv/bin/python benchmarks/score_mode.py [--ours prefix] [--reference full_sequence]
        [--questions 3] [--data MMLU_PRO.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
from statistics import median

import numpy as np
from _timing import interleaved_times, ratio_spread  # this folder (run as a script)

from spark_jax.core.provenance import code_version
from spark_jax.eval.agent import action_names
from spark_jax.model.pretrained import load_pretrained
from spark_jax.protocol import prompts
from spark_jax.protocol.chat import encode_chat
from spark_jax.testing.score_reference import full_sequence_logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--data", default=os.environ.get("MMLU_PRO"), required="MMLU_PRO" not in os.environ,
                    help="MMLU-Pro questions, read at run time (default: $MMLU_PRO)")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--ours", choices=("prefix", "whole_prompt"), default="prefix")
    ap.add_argument("--reference", choices=("whole_prompt", "full_sequence"), default="full_sequence")
    args = ap.parse_args()
    from spark_jax.data.mmlu_pro import load_questions

    model = load_pretrained(args.model)
    tok = model.tokenizer
    questions = load_questions(args.data)[:: max(1, 12000 // args.questions)][: args.questions]
    states = [encode_chat(tok, prompts.initial_messages(q)) for q in questions]
    headers = [list(tok(f"Action: {n}\nInput:", add_special_tokens=False)["input_ids"]) for n in action_names()]
    system_len = len(encode_chat(tok, prompts.initial_messages(questions[0])[:1], add_generation_prompt=False))
    ways = {
        "prefix": lambda s: model.score_continuations(s, headers, prefix_len=system_len),
        "whole_prompt": lambda s: model.score_continuations(s, headers),
        "full_sequence": lambda s: full_sequence_logprobs(model, s, headers),
    }
    worst = 0.0
    for s in states:
        got, want = ways[args.ours](s), ways[args.reference](s)
        worst = max(worst, max(float(np.abs(np.subtract(g, w)).max()) for g, w in zip(got, want)))
    it = {"i": 0}

    def ours():
        ways[args.ours](states[it["i"] % len(states)])

    def reference():
        ways[args.reference](states[it["i"] % len(states)])
        it["i"] += 1

    ours_s, ref_s = interleaved_times(ours, reference, repeats=len(states))
    commit = (code_version()["commit"] or "")[:7]
    row = {"benchmark": "score_mode_per_question", "model": args.model, "questions": len(states),
           "state_tokens": [len(s) for s in states], "system_prompt_tokens": system_len,
           f"{args.ours}_s": round(median(ours_s), 3), f"{args.reference}_s": round(median(ref_s), 3),
           "speedup": round(median(ref_s) / median(ours_s), 2), "pair_speedups": ratio_spread(ours_s, ref_s),
           "max_abs_logprob_diff": worst, "commit": commit}
    print(f"| way | seconds per question (median of {len(states)}) |\n|---|---|\n"
          f"| {args.ours} (ours) | {row[f'{args.ours}_s']} |\n| {args.reference} (reference) | "
          f"{row[f'{args.reference}_s']} |\nspeedup {row['speedup']}x (pairs {row['pair_speedups']}), "
          f"max |log-prob difference| {worst:.2e}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
