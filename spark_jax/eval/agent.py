"""The evaluation agent: the policy picks its own action at every step (no judge).

Each step the policy sees the state (the Stage 1 system prompt, the question, its earlier
actions and the observations) and writes one action in the documented format
(``spark_jax.protocol.actions``)::

    Action: <calculator|python|sympy|units|chemistry|constants|finance|search|cot|answer>
    Input: <text>

The text is parsed strictly. A message that does not parse is a *format error*: it is kept in
the transcript, shown back to the model as ``Observation: Format error: ...`` and counted. Tools
run as in Stage 1. ``answer`` ends the question; after ``max_steps`` actions without one, the
model is asked for its final answer. The letter comes from MMLU-Pro's official patterns.

Two ways to choose the action:

* ``generate``: the policy writes the whole action (free generation, greedy by default).
* ``score``: the ten action headers ``Action: <name>\\nInput:`` are ranked by the policy's
  summed log-probability after the prompt (one prefill of the state, the headers as short
  continuations against its cache; the ten log-probs are kept per step in ``header_logprobs``),
  and the policy then writes only the input. Never a format error in the header.

All questions advance in lockstep, so each step is one batched ``generate`` (and, in score
mode, one batched ``logits``) call for every question still running.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Mapping, Sequence

from spark_jax.protocol import prompts
from spark_jax.protocol.actions import ANSWER, ActionFormatError, format_action, parse_action
from spark_jax.protocol.answers import extract_answer
from spark_jax.protocol.chat import encode_chat, end_of_turn_ids
from spark_jax.tools import run_tool


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    max_steps: int = 5  # actions before the final answer is forced
    mode: Literal["generate", "score"] = "generate"
    max_action_tokens: int = 96
    max_answer_tokens: int = 160
    observation_chars: int = 600
    tool_timeout_s: float = 10.0
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 16  # questions decoded together

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.mode not in ("generate", "score"):
            raise ValueError(f"mode must be 'generate' or 'score', got {self.mode!r}")
        for name in ("max_action_tokens", "max_answer_tokens", "observation_chars", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")


@dataclasses.dataclass
class _Episode:
    question: Mapping[str, Any]
    messages: list[dict[str, str]]
    actions: list[str] = dataclasses.field(default_factory=list)
    header_logprobs: list[dict[str, float]] = dataclasses.field(default_factory=list)  # score mode, per step
    turns: int = 0  # policy messages written, format errors included
    format_errors: int = 0
    final_text: str | None = None
    forced: bool = False

    @property
    def done(self) -> bool:
        return self.final_text is not None


def action_names() -> tuple[str, ...]:
    """The ten choices of the policy: the nine candidate actions, then ``answer``."""
    return prompts.candidate_actions() + (ANSWER,)


def format_error_message(error: str) -> dict[str, str]:
    return {"role": "user", "content": (
        f"Observation: Format error: {error}. Reply with exactly two parts: a line 'Action: <name>' "
        f"(one of {', '.join(action_names())}) and a line 'Input: <text>'.")}


class PolicyAgent:
    """Runs questions through a local policy (a ``PretrainedModel``) with real tools."""

    def __init__(self, model: Any, config: AgentConfig = AgentConfig(), *,
                 tool_runner: Callable[..., Any] | None = None, name: str = "policy"):
        if model.tokenizer is None:
            raise ValueError("the policy model has no tokenizer (give a model directory with tokenizer files)")
        self.model = model
        self.config = config
        self.name = name
        self.eos = end_of_turn_ids(model)
        self.tool_runner = tool_runner or run_tool
        self._seed = config.seed
        self._system_ids: dict[str, list[int]] = {}  # system prompt text -> its rendered tokens

    # ---- decoding helpers -----------------------------------------------------------------

    def _decode(self, prompt_ids: Sequence[Sequence[int]], max_new: int) -> list[str]:
        outs: list[str] = []
        tok = self.model.tokenizer
        bs = self.config.batch_size
        for i in range(0, len(prompt_ids), bs):
            chunk = self.model.generate(list(prompt_ids[i:i + bs]), max_new, temperature=self.config.temperature,
                                        seed=self._seed, eos_token_ids=self.eos)
            self._seed += 1
            outs += [tok.decode([t for t in o if t not in self.eos], skip_special_tokens=True) for o in chunk]
        return outs

    def _prompt_ids(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return encode_chat(self.model.tokenizer, messages)

    def _header_ids(self, name: str) -> list[int]:
        return list(self.model.tokenizer(f"Action: {name}\nInput:", add_special_tokens=False)["input_ids"])

    def score_actions(self, prompt_ids: Sequence[int], prefix_len: int = 0) -> dict[str, float]:
        """Summed log-probability of each action header after ``prompt_ids``: one prefill of the
        prompt (after the cached first ``prefix_len`` tokens), then the ten headers as short
        continuations against its cache."""
        names = action_names()
        scores = self.model.score_continuations(list(prompt_ids), [self._header_ids(n) for n in names],
                                                prefix_len=prefix_len)
        return {n: float(sum(s)) for n, s in zip(names, scores)}

    def _system_prefix_len(self, messages: Sequence[Mapping[str, str]], prompt_ids: Sequence[int]) -> int:
        """How many leading tokens of ``prompt_ids`` are the rendered system turn (0 if they are not)."""
        if not messages or messages[0].get("role") != "system":
            return 0
        content = messages[0].get("content", "")
        system = self._system_ids.get(content)
        if system is None:  # rendered once per system prompt, not once per scored state
            system = self._system_ids[content] = encode_chat(self.model.tokenizer, messages[:1],
                                                             add_generation_prompt=False)
        n = len(system)
        return n if 0 < n < len(prompt_ids) and list(prompt_ids[:n]) == system else 0

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, questions: Sequence[Mapping[str, Any]], progress: Any = None) -> list[dict[str, Any]]:
        """One prediction row per question (see ``spark_jax.eval.metrics``), transcript included."""
        episodes = [_Episode(q, prompts.initial_messages(q)) for q in questions]
        allowed = action_names()
        for _ in range(self.config.max_steps):
            active = [e for e in episodes if not e.done]
            if not active:
                break
            texts = self._choose(active)
            for ep, text in zip(active, texts):
                self._apply(ep, text, allowed)
            if progress is not None:
                progress.update(sum(e.done for e in active))
        pending = [e for e in episodes if not e.done]
        if pending:
            finals = self._decode([self._prompt_ids(prompts.generator_messages(e.messages, ANSWER)) for e in pending],
                                  self.config.max_answer_tokens)
            for ep, text in zip(pending, finals):
                ep.forced = True
                ep.final_text = text.strip()
                ep.messages.append({"role": "assistant", "content": format_action(ANSWER, ep.final_text or "-")})
            if progress is not None:
                progress.update(len(pending))
        rows = []
        for ep in episodes:
            pred = extract_answer(ep.final_text or "")
            q = ep.question
            rows.append({
                "question_id": q["question_id"], "category": q["category"], "model": self.name, "pred": pred,
                "correct": pred is not None and pred == q["answer"], "actions": ep.actions + [ANSWER],
                "steps": ep.turns + int(ep.forced), "format_errors": ep.format_errors, "forced_answer": ep.forced,
                "policy_turns": ep.turns, "header_logprobs": ep.header_logprobs, "transcript": ep.messages,
            })
        return rows

    def _choose(self, active: Sequence[_Episode]) -> list[str]:
        """The action message each active episode writes this step."""
        prompt_ids = [self._prompt_ids(e.messages) for e in active]
        if self.config.mode == "generate":
            return self._decode(prompt_ids, self.config.max_action_tokens)
        chosen = []
        for ep, ids in zip(active, prompt_ids):
            # the system prompt is most of a state's tokens: its cache is computed once per model
            scores = self.score_actions(ids, self._system_prefix_len(ep.messages, ids))
            ep.header_logprobs.append(scores)
            chosen.append(max(scores, key=scores.get))
        heads = [ids + self._header_ids(name) for ids, name in zip(prompt_ids, chosen)]
        bodies = self._decode(heads, self.config.max_action_tokens)
        return [f"Action: {name}\nInput: {body.lstrip(' ')}" for name, body in zip(chosen, bodies)]

    def _apply(self, ep: _Episode, text: str, allowed: tuple[str, ...]) -> None:
        ep.turns += 1
        text = text.strip()
        # The policy often continues past its action into an imagined observation: keep the action.
        text = text.split("\nObservation:")[0].strip()
        try:
            action = parse_action(text, allowed)
        except ActionFormatError as e:
            ep.format_errors += 1
            ep.messages.append({"role": "assistant", "content": text or "(empty)"})
            ep.messages.append(format_error_message(str(e)))
            return
        ep.messages.append({"role": "assistant", "content": format_action(action.name, action.text)})
        if action.name == ANSWER:
            ep.final_text = action.text
            return
        ep.actions.append(action.name)
        if action.name == prompts.COT:
            return
        result = self.tool_runner(action.name, action.text, timeout_s=self.config.tool_timeout_s)
        ep.messages.append(prompts.observation_message(result.ok, result.output, result.error,
                                                       self.config.observation_chars))

