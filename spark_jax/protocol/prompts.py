"""Prompt rendering for rollouts and evaluation (pure functions of their inputs).

The state s_t of a trajectory is a list of chat messages:

1. a system prompt that explains the task, the action format
   (``spark_jax.protocol.actions``) and the nine actions plus ``answer``;
2. the question as a user message in MMLU-Pro's official layout;
3. for every earlier step, the assistant's action message and, after a tool, a user
   message ``"Observation: <tool output or error>"``.

During Stage 1 the generator is asked for one part at a time (a tool argument, a thought,
or the final answer) by appending one instruction message to the state
(:func:`generator_messages`); the stored state never contains those instructions.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from spark_jax.protocol.action_specs import ACTION_SPECS, ActionSpec
from spark_jax.protocol.actions import ANSWER, ActionFormatError, parse_action

COT = "cot"
LETTERS = "ABCDEFGHIJ"


_ANSWER_SPEC = ActionSpec(ANSWER, "give the final answer and stop", 'end with "the answer is (X)" where X is the letter')


def action_specs() -> tuple[ActionSpec, ...]:
    """The nine candidate actions in their fixed order."""
    return ACTION_SPECS


def candidate_actions(specs: Sequence[ActionSpec] | None = None) -> tuple[str, ...]:
    return tuple(s.name for s in (specs or action_specs()))


def system_prompt(specs: Sequence[ActionSpec] | None = None) -> str:
    specs = tuple(specs or action_specs()) + (_ANSWER_SPEC,)
    lines = [
        "You answer a multiple-choice question step by step. At each step you take exactly one action,",
        "written as two parts:",
        "Action: <name>",
        "Input: <text>",
        "After a tool action you receive its result as 'Observation: ...'. Use the tools when they help,",
        "think with 'cot', and finish with 'answer'.",
        "",
        "Actions:",
    ]
    # Names and one-line descriptions only: the input format of a tool is shown when the
    # generator is asked for that tool's input (generator_instruction). Listing every format
    # here made the system prompt ~935 SmolLM2 tokens, 80% of every state, paid again by the
    # judge, the generator and the trainer at every step; this way it is ~300.
    lines += [f"- {s.name}: {_sentence(s.description)}" for s in specs]
    return "\n".join(lines)


def _sentence(text: str) -> str:
    """``text`` ending in exactly one full stop (tool descriptions may or may not have one)."""
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."


def question_prompt(question: Mapping[str, Any]) -> str:
    """The question in MMLU-Pro's official zero-shot chain-of-thought layout."""
    subject = str(question["category"])
    head = (
        f"The following are multiple choice questions (with answers) about {subject}. Think step by step "
        'and then finish your answer with "the answer is (X)" where X is the correct letter choice.'
    )
    options = "".join(f"{LETTERS[i]}. {opt}\n" for i, opt in enumerate(question["options"]))
    return f"{head}\n\nQuestion:\n{question['question']}\nOptions:\n{options}Answer: Let's think step by step."


def initial_messages(question: Mapping[str, Any], specs: Sequence[ActionSpec] | None = None) -> list[dict[str, str]]:
    """s_0: the system prompt and the question."""
    return [
        {"role": "system", "content": system_prompt(specs)},
        {"role": "user", "content": question_prompt(question)},
    ]


def observation_message(ok: bool, output: str, error: str | None, max_chars: int) -> dict[str, str]:
    """The user message that shows a tool's result (or its error), cut to ``max_chars``."""
    text = output if ok else f"Error: {error or output or 'the tool failed without a message'}"
    text = text.strip()
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n[... cut at {max_chars} characters]"
    return {"role": "user", "content": f"Observation: {text}"}


def generator_instruction(action: str, specs: Sequence[ActionSpec] | None = None) -> str:
    """What the generator is asked to write for ``action`` (a tool, ``cot`` or ``answer``)."""
    if action == ANSWER:
        return (
            "Give your final answer now. Briefly state your reasoning and finish with "
            '"the answer is (X)" where X is the correct letter.'
        )
    if action == COT:
        return "Next action: cot. Write your next reasoning step in a few sentences. Do not call a tool."
    spec = {s.name: s for s in (specs or action_specs())}.get(action)
    fmt = _sentence(spec.argument_format) if spec else "its input."
    desc = f" ({spec.description.strip().rstrip('.')})" if spec else ""
    return (
        f"Next action: {action}{desc}. Write only the input for this tool, nothing else. "
        f"Input format: {fmt}"
    )


def generator_messages(
    messages: Sequence[Mapping[str, str]], action: str, specs: Sequence[ActionSpec] | None = None
) -> list[dict[str, str]]:
    """The state plus one instruction asking for ``action``'s text."""
    return [dict(m) for m in messages] + [{"role": "user", "content": generator_instruction(action, specs)}]


_FENCE = re.compile(r"\A```[A-Za-z0-9_+-]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


def clean_generation(text: str, action: str) -> str:
    """The generator's text for ``action``: an imitated 'Action:/Input:' wrapper is removed,
    and for tools a surrounding Markdown code fence and a leading 'Input:' label too."""
    text = (text or "").strip()
    if text.startswith("Action:"):
        try:
            text = parse_action(text).text
        except ActionFormatError:
            pass
    if action not in (COT, ANSWER):
        if text.startswith("Input:"):
            text = text[len("Input:"):].strip()
        m = _FENCE.match(text)
        if m:
            text = m.group(1).strip()
    return text
