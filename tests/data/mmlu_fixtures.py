"""Synthetic MMLU-Pro records for tests (the real test split is never copied into the repo)."""

from __future__ import annotations

import json
import pathlib

LETTERS = "ABCDEFGHIJ"


def make_question(qid: int, category: str = "math", n_options: int = 4, answer_index: int = 1, **over):
    q = {
        "question_id": qid,
        "question": f"Synthetic question {qid}: what is {qid} + 1?",
        "options": [f"option {i} of q{qid}" for i in range(n_options)],
        "answer": LETTERS[answer_index],
        "answer_index": answer_index,
        "cot_content": "",
        "category": category,
        "src": f"synthetic-{category}",
    }
    q.update(over)
    return q


def make_bank(categories: dict[str, int], start: int = 0) -> list[dict]:
    out, qid = [], start
    for cat, n in categories.items():
        for _ in range(n):
            out.append(make_question(qid, cat, n_options=4 + qid % 7, answer_index=qid % 4))
            qid += 1
    return out


def write_jsonl(path: pathlib.Path, records, raw_lines=()) -> pathlib.Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path
