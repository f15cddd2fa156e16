"""Deterministic test doubles of the judge, generator and tool runner (tests only).

Every output is a pure function of its input (hashes of question_id, step and action), so
two runs with the same settings must produce byte-identical records whatever the timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random

from spark_jax.backends.accounting import BackendStats
from spark_jax.protocol.interfaces import JudgeResult

LETTERS = "ABCDEFGHIJ"


def _h(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12], 16)


class FakeJudge:
    def __init__(self, name="fake-judge", *, delay_s=0.0, fail_qids=(), jitter_seed=None):
        self.name = name
        self.delay_s = delay_s
        self.fail_qids = set(fail_qids)
        self.stats = BackendStats()
        self._rng = random.Random(jitter_seed) if jitter_seed is not None else None

    async def score(self, request):
        if self.delay_s or self._rng:
            await asyncio.sleep(self.delay_s + (self._rng.random() * 0.01 if self._rng else 0.0))
        self.stats.calls += 1
        self.stats.cost_usd += 0.001
        qid = request.question["question_id"]
        if qid in self.fail_qids:
            return JudgeResult(ok=False, error="malformed JSON from the judge", attempts=3)
        # Scores depend on the question, step and action; the state length is checked too so
        # that a driver passing the wrong state would change the scores.
        scores = {a: float(_h(qid, request.step, a, len(request.messages)) % 11) for a in request.actions}
        return JudgeResult(ok=True, scores=scores, cost_usd=0.001)


class FakeGenerator:
    """Answers the instruction in the last message; ``early`` makes thoughts state an answer."""

    def __init__(self, name="fake-generator", *, delay_s=0.0, early=False, batched=False):
        self.name = name
        self.delay_s = delay_s
        self.early = early
        self.batch_sizes = []
        if batched:
            self.complete_many = self._complete_many

    def _text(self, messages) -> str:
        instruction = messages[-1]["content"]
        question = messages[1]["content"]
        key = _h(question, len(messages))
        if "final answer" in instruction:
            return f"After all that, the answer is ({LETTERS[key % 4]})."
        if "Next action: cot" in instruction:
            return f"Thought {key % 97}: compare the options." + (" So the answer is (B)." if self.early else "")
        return f"```\n{key % 50} + {len(messages)}\n```"

    async def complete(self, messages, *, max_tokens, stop=None):
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return self._text(messages)

    def _complete_many(self, batch, *, max_tokens, stop=None):
        self.batch_sizes.append(len(batch))
        return [self._text(m) for m in batch]


@dataclasses.dataclass
class FakeToolResult:
    ok: bool
    output: str
    error: str | None
    elapsed_s: float = 0.0


def fake_tool_runner(name, argument, *, timeout_s=None):
    if name == "search":
        return FakeToolResult(False, "", "index not built")
    if name == "python":
        raise RuntimeError("sandbox crashed")
    return FakeToolResult(True, f"{name}[{argument}] = {_h(name, argument) % 1000}", None)


def write_bank(path, categories: dict[str, int]):
    """A synthetic MMLU-Pro JSONL file with ``categories[c]`` questions per category."""
    qid = 100
    with open(path, "w", encoding="utf-8") as f:
        for cat, n in categories.items():
            for _ in range(n):
                n_opt = 4 + qid % 7
                f.write(json.dumps({
                    "question_id": qid, "question": f"Question {qid} about {cat}?",
                    "options": [f"opt {i}" for i in range(n_opt)], "answer": LETTERS[qid % 4],
                    "answer_index": qid % 4, "cot_content": "", "category": cat, "src": "synthetic",
                }) + "\n")
                qid += 1
    return path
