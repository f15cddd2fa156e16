"""The judge's prompt, the JSON schema of its reply, and the reply's validator.

The API judge sees one prompt per step: the question with lettered options, the trajectory so
far, and every candidate action with its one-line description; it replies with an integer score
0-10 per candidate for how useful taking that action *now* would be. The local judge asks the
same question about one candidate at a time (:func:`single_action_messages`), so its answer is
a single number whose next-token distribution it can read.
"""

from __future__ import annotations

import json
import string
from typing import Any, Mapping, Sequence

from spark_jax.protocol.action_specs import action_spec
from spark_jax.protocol.interfaces import JudgeRequest

SCORE_MIN, SCORE_MAX = 0, 10
SCHEMA_NAME = "action_scores"

def action_description(name: str) -> str:
    """The one-line description of a candidate action (``spark_jax.protocol.action_specs``)."""
    return action_spec(name).description


class ScoreFormatError(ValueError):
    """A judge reply that does not match the score schema; the message says exactly how."""


# ---- rendering the state -------------------------------------------------------------------


def format_question(question: Mapping[str, Any]) -> str:
    """The question text followed by its options lettered A., B., ... (MMLU-Pro layout)."""
    text = str(question.get("question", "")).strip()
    if not text:
        raise ValueError(f"question record {question.get('question_id', '?')} has no 'question' text")
    options = list(question.get("options") or [])
    if len(options) > len(string.ascii_uppercase):
        raise ValueError(f"question {question.get('question_id', '?')} has {len(options)} options; at most 26")
    lines = [text]
    if options:
        lines.append("Options:")
        lines += [f"{letter}. {str(opt).strip()}" for letter, opt in zip(string.ascii_uppercase, options)]
    return "\n".join(lines)


def format_trajectory(messages: Sequence[Mapping[str, str]], question_text: str = "") -> str:
    """The steps taken so far, one block per message.

    System messages are left out (the judge has its own instructions), and so is the first
    user message when it carries the question, which the prompt already shows with its options.
    """
    blocks = []
    skipped_question = False
    for m in messages:
        role, content = m.get("role", "?"), str(m.get("content", "")).strip()
        if role == "system":
            continue
        if not skipped_question and role == "user" and question_text and question_text in content:
            skipped_question = True
            continue
        blocks.append(f"[{role}]\n{content}")
    return "\n\n".join(blocks) if blocks else "(no steps taken yet)"


def _candidate_lines(actions: Sequence[str]) -> str:
    return "\n".join(f"- {a}: {action_description(a)}" for a in actions)


JUDGE_SYSTEM = (
    "You are an expert evaluator of problem-solving strategies. A solver is working on a "
    "multiple-choice question step by step. At each step it may call one tool or write a "
    "step of reasoning (cot). You rate how useful each candidate action would be if the "
    "solver took it as its NEXT step, given the question and what has been done so far. "
    "Score every candidate with an integer from 0 (useless or harmful now) to 10 (clearly "
    "the most useful next step). Judge each candidate on its own merits; several may "
    "score high or low. Reply with JSON only."
)


def judge_messages(req: JudgeRequest) -> list[dict[str, str]]:
    """System + user messages asking for a 0-10 score for every candidate in ``req.actions``."""
    _check_actions(req.actions)
    question = format_question(req.question)
    category = req.question.get("category")
    subject = f" about {category}" if category else ""
    user = (
        f"Question{subject}:\n{question}\n\n"
        f"Steps taken so far (this is step {req.step + 1}):\n"
        f"{format_trajectory(req.messages, str(req.question.get('question', '')).strip())}\n\n"
        f"Candidate actions for the next step:\n{_candidate_lines(req.actions)}\n\n"
        "How useful would taking each action NOW be? Reply with a JSON object of the form "
        '{"scores": {"<action>": <integer 0-10>, ...}} with exactly these keys: '
        + ", ".join(req.actions)
        + "."
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def single_action_messages(req: JudgeRequest, action: str) -> list[dict[str, str]]:
    """Messages asking for one bare integer 0-10: the usefulness of ``action`` as the next step.

    Everything but the last line is the same for every candidate of a step, so the local judge
    computes that shared prefix once and only the short candidate line per candidate.
    """
    _check_actions((action,))
    question = format_question(req.question)
    user = (
        f"Question:\n{question}\n\n"
        f"Steps taken so far:\n"
        f"{format_trajectory(req.messages, str(req.question.get('question', '')).strip())}\n\n"
        f"Possible actions:\n{_candidate_lines(req.actions)}\n\n"
        "On a scale from 0 (useless now) to 10 (the most useful next step), how useful is the "
        "proposed action below as the next step? Answer with a single integer from 0 to 10 and nothing else.\n"
        f"Proposed next action: {action} ({action_description(action)})"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM.replace(" Reply with JSON only.", "")},
            {"role": "user", "content": user}]


def reask_message(error: str, actions: Sequence[str]) -> dict[str, str]:
    """The user turn sent after an invalid reply, naming what was wrong."""
    return {
        "role": "user",
        "content": (
            f"Your reply was invalid: {error}. Reply again with only the JSON object "
            '{"scores": {...}} holding an integer from 0 to 10 for exactly these keys: '
            + ", ".join(actions)
            + "."
        ),
    }


def _check_actions(actions: Sequence[str]) -> None:
    if not actions:
        raise ValueError("a judge request needs at least one candidate action")
    if len(set(actions)) != len(actions):
        raise ValueError(f"candidate actions repeat: {list(actions)}")
    for a in actions:
        action_description(a)  # raises KeyError naming the unknown action


# ---- reply schema and validation -----------------------------------------------------------


def score_schema(actions: Sequence[str]) -> dict[str, Any]:
    """JSON schema of the reply: {"scores": {<action>: integer 0..10}} with every key required.

    Servers that enforce the schema (OpenAI strict mode, vLLM guided decoding) constrain the
    range through minimum/maximum; :func:`parse_scores` checks everything again regardless,
    since a compatible server may ignore ``response_format``.
    """
    _check_actions(actions)
    score = {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX}
    return {
        "type": "object",
        "properties": {
            "scores": {
                "type": "object",
                "properties": {a: dict(score) for a in actions},
                "required": list(actions),
                "additionalProperties": False,
            }
        },
        "required": ["scores"],
        "additionalProperties": False,
    }


def response_format(actions: Sequence[str]) -> dict[str, Any]:
    """The ``response_format`` argument of a chat completion asking for :func:`score_schema`."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "strict": True, "schema": score_schema(actions)},
    }


def parse_scores(text: str | None, actions: Sequence[str]) -> dict[str, int]:
    """Validates a reply against :func:`score_schema` and returns ``{action: score}``.

    Raises :class:`ScoreFormatError` naming the first problem: not JSON, wrong shape, a
    missing or extra key, a non-integer score, or a score outside 0..10.
    """
    if text is None or not text.strip():
        raise ScoreFormatError("the reply is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScoreFormatError(f"the reply is not JSON ({e.msg} at character {e.pos}): {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise ScoreFormatError(f"the reply must be a JSON object, got {type(data).__name__}")
    extra_top = sorted(set(data) - {"scores"})
    if "scores" not in data:
        raise ScoreFormatError(f"the reply lacks the key 'scores' (keys: {sorted(data)})")
    if extra_top:
        raise ScoreFormatError(f"the reply has unexpected top-level key(s) {extra_top}")
    scores = data["scores"]
    if not isinstance(scores, dict):
        raise ScoreFormatError(f"'scores' must be an object, got {type(scores).__name__}")
    missing = [a for a in actions if a not in scores]
    if missing:
        raise ScoreFormatError(f"'scores' is missing key(s) {missing}")
    extra = sorted(set(scores) - set(actions))
    if extra:
        raise ScoreFormatError(f"'scores' has unexpected key(s) {extra}")
    out: dict[str, int] = {}
    for a in actions:
        v = scores[a]
        # JSON true/false decode to bool, a subclass of int: not a score. 7.0 is an integer value.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScoreFormatError(f"score for {a!r} must be an integer, got {json.dumps(v)}")
        if isinstance(v, float) and not v.is_integer():
            raise ScoreFormatError(f"score for {a!r} must be an integer, got {v}")
        if not SCORE_MIN <= v <= SCORE_MAX:
            raise ScoreFormatError(f"score for {a!r} is {v:g}, outside {SCORE_MIN}..{SCORE_MAX}")
        out[a] = int(v)
    return out
