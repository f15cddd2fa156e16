"""The policy's action format, shared by Stage 1 records, training targets and evaluation.

An action is one assistant message of exactly this shape::

    Action: <name>
    Input: <text, may span several lines>

``<name>`` is one of the eight tools, ``cot`` (the text is a thought) or ``answer`` (the
text is the final answer, e.g. "The answer is (C)."). Parsing is strict: anything else is
an :class:`ActionFormatError` whose message a model can read and correct.
"""

from __future__ import annotations

import dataclasses
import re

ANSWER = "answer"
_HEAD = re.compile(r"\AAction:[ \t]*([A-Za-z_]+)[ \t]*\r?\nInput:[ \t]?(.*)\Z", re.DOTALL)


class ActionFormatError(ValueError):
    """Text that is not a well-formed action."""


@dataclasses.dataclass(frozen=True)
class Action:
    name: str  # a tool name, "cot" or "answer"
    text: str  # tool argument, thought, or final answer


def format_action(name: str, text: str) -> str:
    """The assistant message for ``name`` with ``text`` (inverse of :func:`parse_action`)."""
    if not re.fullmatch(r"[A-Za-z_]+", name):
        raise ValueError(f"action name {name!r} must be letters and underscores")
    return f"Action: {name}\nInput: {text.strip()}"


def parse_action(text: str, allowed: tuple[str, ...] | None = None) -> Action:
    """Parses one action; ``allowed`` (e.g. TOOL_NAMES + ("answer",)) restricts the name."""
    m = _HEAD.match(text.strip())
    if m is None:
        raise ActionFormatError(
            "expected two parts: a line 'Action: <name>' then 'Input: <text>'; got "
            + repr(text.strip()[:120])
        )
    name, body = m.group(1).lower(), m.group(2).strip()
    if allowed is not None and name not in allowed:
        raise ActionFormatError(f"unknown action {name!r}; choose one of {', '.join(allowed)}")
    if not body:
        raise ActionFormatError(f"action {name!r} has an empty Input")
    return Action(name, body)
