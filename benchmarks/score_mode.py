"""Score mode per question: the cached header scoring against the full-sequence reference.

One question = the ten action headers ranked after a Stage 1 state. The cached way prefills the
state once and runs the ten headers against its KV cache (``PretrainedModel.score_continuations``);
the reference builds ten full sequences and copies back their logits
(``spark_jax.testing.score_reference``). Both are timed alternately on the same states, after one
untimed call each (compilation); the script also checks that both give the same log-probs.

    PYTHONPATH=. .venv/bin/python benchmarks/score_mode.py [--questions 3] [--data MMLU_PRO.jsonl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from statistics import median

import numpy as np
from _timing import interleaved_times, ratio_spread  # this folder (run as a script)

from spark_jax.eval.agent import action_names
from spark_jax.model.pretrained import load_pretrained
from spark_jax.protocol import prompts
from spark_jax.protocol.chat import encode_chat
from spark_jax.testing.score_reference import full_sequence_logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--data", default="../shared/data/mmlu_pro/test.jsonl", help="MMLU-Pro questions (read at run time)")
    ap.add_argument("--questions", type=int, default=3)
    args = ap.parse_args()
    from spark_jax.data.mmlu_pro import load_questions

    model = load_pretrained(args.model)
    tok = model.tokenizer
    questions = load_questions(args.data)[:: max(1, 12000 // args.questions)][: args.questions]
    states = [encode_chat(tok, prompts.initial_messages(q)) for q in questions]
    headers = [list(tok(f"Action: {n}\nInput:", add_special_tokens=False)["input_ids"]) for n in action_names()]
    worst = 0.0
    for s in states:
        got, want = model.score_continuations(s, headers), full_sequence_logprobs(model, s, headers)
        worst = max(worst, max(float(np.abs(np.subtract(g, w)).max()) for g, w in zip(got, want)))
    it = {"i": 0}

    def cached():
        model.score_continuations(states[it["i"] % len(states)], headers)

    def reference():
        full_sequence_logprobs(model, states[it["i"] % len(states)], headers)
        it["i"] += 1

    ours, ref = interleaved_times(cached, reference, repeats=len(states))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {"benchmark": "score_mode_per_question", "model": args.model, "questions": len(states),
           "state_tokens": [len(s) for s in states], "cached_s": round(median(ours), 3),
           "full_sequence_s": round(median(ref), 3), "speedup": round(median(ref) / median(ours), 2),
           "pair_speedups": ratio_spread(ours, ref), "max_abs_logprob_diff": worst, "commit": commit}
    print(f"| way | seconds per question (median of {len(states)}) |\n|---|---|\n"
          f"| cached (one prefill + 10 headers) | {row['cached_s']} |\n| full sequences (reference) | "
          f"{row['full_sequence_s']} |\nspeedup {row['speedup']}x (pairs {row['pair_speedups']}), "
          f"max |log-prob difference| {worst:.2e}")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
