"""MMLU-Pro's official answer extraction (TIGER-Lab evaluate_from_local.py), minus its random fallback.

The official script tries three patterns in order and, when none matches, picks a random
letter. We return ``None`` instead so that an unanswered question counts as wrong and is
visible as such rather than scoring 10% by luck.
"""

from __future__ import annotations

import re

# The three official patterns, in the official order.
_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_ANSWER_COLON = re.compile(r".*[aA]nswer:\s*([A-J])")
_LAST_LETTER = re.compile(r"\b[A-J]\b(?!.*\b[A-J]\b)", re.DOTALL)


def extract_answer_strict(text: str) -> str | None:
    """The letter of an explicit answer statement (the first two official patterns only).

    Used during rollouts to notice that a thought already states its answer; a stray capital
    letter (the third pattern) is not taken as an answer there.
    """
    m = _ANSWER_IS.search(text)
    if m:
        return m.group(1)
    m = _ANSWER_COLON.search(text)
    if m:
        return m.group(1)
    return None


def extract_answer(text: str) -> str | None:
    """The answer letter A-J in a model's output by the official patterns, or ``None``."""
    letter = extract_answer_strict(text)
    if letter is not None:
        return letter
    m = _LAST_LETTER.search(text)
    return m.group(0) if m else None
