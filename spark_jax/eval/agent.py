"""The evaluation agent: the policy picks its own action at every step (no judge).

Each step the policy sees the state (the Stage 1 system prompt, the question, its earlier
actions and the observations) and writes one action in the documented format
(``spark_jax.protocol.actions``)::

    Action: <calculator|python|sympy|units|chemistry|constants|finance|search|cot|answer>
    Input: <text>

The text is parsed strictly. A message that does not parse is a *format error*: it is kept in
the transcript, shown back to the model as ``Observation: Format error: ...`` and counted. Tools
run as in Stage 1. ``answer`` ends the question; after ``max_steps`` actions without one, the
final answer is forced. The letter comes from MMLU-Pro's official patterns.

How the final answer is read (``answer_mode``):

* ``letter`` (default): the answer is always read. After the policy's state and the header
  ``Action: answer\nInput: The answer is (``, the question's option letters are scored by
  log-probability and the best one is taken, so every question gets a letter by construction.
  This reads the forced answer, an ``answer`` chosen in score mode (no free input is written),
  and an answer the policy wrote in generate mode that holds no readable letter.
* ``text``: the old free-text answer (forced answers are asked for with an instruction and
  decoded); an answer without a readable letter stays unanswered (``pred`` None).

Two ways to choose the action:

* ``generate``: the policy writes the whole action (free generation, greedy by default).
* ``score``: the ten action headers ``Action: <name>\\nInput:`` are ranked by the policy's
  summed log-probability after the prompt (one prefill of the state, the headers as short
  continuations against its cache; the ten log-probs are kept per step in ``header_logprobs``),
  and the policy then writes only the input. Never a format error in the header.

The questions of a chunk of ``batch_size`` advance in lockstep and share one ``DecodeSession``:
each step appends only what is new in every state (one batched prefill after the cached system
prompt). Score mode then scores the ten headers of the active rows in one pass (a tree: the
headers' common prefix once) and decodes the inputs of the rows that write one from the same
cache; generate mode decodes the active rows' whole actions from it. Letters are read from it
too. (A model on a mesh runs one question at a time without a session.) In both modes, one
step's tool calls run concurrently (at most ``tool_workers`` at a time).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import time
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from spark_jax.eval.metrics import score_prediction
from spark_jax.protocol import prompts
from spark_jax.protocol.actions import ANSWER, ActionFormatError, format_action, parse_action
from spark_jax.protocol.answers import extract_answer
from spark_jax.protocol.chat import encode_chat, end_of_turn_ids
from spark_jax.tools import run_tool

ANSWER_LEAD = "The answer is ("  # the forced answer's text before the scored letter


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
    answer_mode: Literal["letter", "text"] = "letter"  # how the final answer is read (module docstring)
    tool_workers: int = 8  # one step's tool calls run concurrently, at most this many at a time

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.mode not in ("generate", "score"):
            raise ValueError(f"mode must be 'generate' or 'score', got {self.mode!r}")
        if self.answer_mode not in ("letter", "text"):
            raise ValueError(f"answer_mode must be 'letter' or 'text', got {self.answer_mode!r}")
        for name in ("max_action_tokens", "max_answer_tokens", "observation_chars", "batch_size", "tool_workers"):
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
    answer_scored: bool = False  # the letter was read by scoring the options (answer_mode letter)
    written_answer: str | None = None  # the policy's answer text when it held no readable letter

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
        self._session: Any = None  # score mode: the DecodeSession of the chunk being run
        self._chunk: list[_Episode] = []  # the episodes of that session, one row each
        # seconds per phase of the last runs (benchmarks/score_mode_profile.py reads them)
        self.phase_seconds: collections.Counter = collections.Counter()
        self.session_restarts = 0

    # ---- decoding helpers -----------------------------------------------------------------

    def _text(self, ids: Sequence[int]) -> str:
        """Decoded text of sampled ids, end-of-turn tokens dropped."""
        return self.model.tokenizer.decode([t for t in ids if t not in self.eos], skip_special_tokens=True)

    def _decode(self, prompt_ids: Sequence[Sequence[int]], max_new: int) -> list[str]:
        outs: list[str] = []
        bs = self.config.batch_size
        for i in range(0, len(prompt_ids), bs):
            chunk = self.model.generate(list(prompt_ids[i:i + bs]), max_new, temperature=self.config.temperature,
                                        seed=self._seed, eos_token_ids=self.eos)
            self._seed += 1
            outs += [self._text(o) for o in chunk]
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

    def _letter_ids(self) -> list[list[int]]:
        tok = self.model.tokenizer
        return [list(tok(letter, add_special_tokens=False)["input_ids"]) for letter in prompts.LETTERS]

    def _answer_head_ids(self) -> list[int]:
        return list(self.model.tokenizer(f"Action: {ANSWER}\nInput: {ANSWER_LEAD}",
                                         add_special_tokens=False)["input_ids"])

    @contextlib.contextmanager
    def _timed(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.phase_seconds[phase] += time.perf_counter() - t

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, questions: Sequence[Mapping[str, Any]], progress: Any = None) -> list[dict[str, Any]]:
        """One prediction row per question (see ``spark_jax.eval.metrics``), transcript included."""
        episodes = [_Episode(q, prompts.initial_messages(q)) for q in questions]
        # one cache per chunk of questions; on a mesh (no session) all questions advance together
        chunk = self.config.batch_size if self._uses_session() else max(1, len(episodes))
        for start in range(0, len(episodes), chunk):
            self._run_chunk(episodes[start:start + chunk], progress)
        return [self._row(ep) for ep in episodes]

    def _uses_session(self) -> bool:
        """Both modes keep a ``DecodeSession`` per chunk; a model on a mesh runs one question at a time."""
        return getattr(self.model, "mesh", True) is None

    def _run_chunk(self, episodes: list[_Episode], progress: Any) -> None:
        allowed = action_names()
        self._session, self._chunk = None, episodes
        try:
            for _ in range(self.config.max_steps):
                active = [e for e in episodes if not e.done]
                if not active:
                    break
                texts = self._choose(active)
                calls = [(ep, self._apply(ep, text, allowed)) for ep, text in zip(active, texts)]
                self._run_tools([(ep, call) for ep, call in calls if call is not None])
                if self.config.answer_mode == "letter":
                    unread = [e for e in active if e.done and extract_answer(e.final_text) is None]
                    if unread:
                        self._score_letters(unread)
                if progress is not None:
                    progress.update(sum(e.done for e in active))
            pending = [e for e in episodes if not e.done]
            if pending:
                for ep in pending:
                    ep.forced = True
                if self.config.answer_mode == "letter":
                    self._score_letters(pending)
                else:
                    with self._timed("final answer"):
                        finals = self._decode([self._prompt_ids(prompts.generator_messages(e.messages, ANSWER))
                                               for e in pending], self.config.max_answer_tokens)
                    for ep, text in zip(pending, finals):
                        ep.final_text = text.strip()
                        ep.messages.append({"role": "assistant", "content": format_action(ANSWER, ep.final_text or "-")})
                if progress is not None:
                    progress.update(len(pending))
        finally:
            self._session, self._chunk = None, []

    def _row(self, ep: _Episode) -> dict[str, Any]:
        pred = extract_answer(ep.final_text or "")
        q = ep.question
        return {
            "question_id": q["question_id"], "category": q["category"], "model": self.name,
            **score_prediction(pred, q), "actions": ep.actions + [ANSWER],
            "steps": ep.turns + int(ep.forced), "format_errors": ep.format_errors, "forced_answer": ep.forced,
            "policy_turns": ep.turns, "header_logprobs": ep.header_logprobs, "answer_mode": self.config.answer_mode,
            "answer_scored": ep.answer_scored, "written_answer": ep.written_answer, "transcript": ep.messages,
        }

    # ---- score mode on a DecodeSession --------------------------------------------------------

    def _sync_session(self, episodes: Sequence[_Episode]) -> list[int]:
        """Brings the session of ``self._chunk`` up to ``episodes``' current states; their rows."""
        # Deferred: the model layer's session is only needed in score mode and for letter answers.
        from spark_jax.model.session import DecodeSession

        chunk = self._chunk
        states = {id(e): self._prompt_ids(e.messages) for e in episodes}
        rows = [states.get(id(e)) for e in chunk]
        with self._timed("prefill (new state tokens)"):
            if self._session is None or not self._session.extend_to(rows):
                # a state that is not an extension of the cached one (a chat template that rewrites
                # earlier turns) costs a fresh prefill of every state of the chunk; counted
                self.session_restarts += self._session is not None
                system = self._system_ids_for(chunk[0].messages)
                self._session = DecodeSession(self.model, system, rows=len(chunk))
                if not self._session.extend_to([r if r is not None else system for r in rows]):
                    raise RuntimeError("a state does not start with its rendered system prompt")
            self._session.wait()  # so the prefill's seconds land in this phase, not the next one
        index = {id(e): i for i, e in enumerate(chunk)}
        return [index[id(e)] for e in episodes]

    def _system_ids_for(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        content = messages[0].get("content", "")
        if content not in self._system_ids:
            self._system_ids[content] = encode_chat(self.model.tokenizer, messages[:1], add_generation_prompt=False)
        return self._system_ids[content]

    def _read_letters(self, eps: Sequence[_Episode]) -> list[str]:
        """The best option letter of each episode after its state and ``Action: answer / Input:
        The answer is (``, by the letters' log-probs (only the question's own options count)."""
        head, letters = self._answer_head_ids(), self._letter_ids()
        if getattr(self.model, "mesh", None) is not None:  # no session on a mesh: one question at a time
            with self._timed("final answer"):
                sums = [[sum(x) for x in self.model.score_continuations(self._prompt_ids(e.messages) + head, letters)]
                        for e in eps]
        else:  # from the chunk's session (both modes)
            rows = self._sync_session(eps)
            with self._timed("final answer"):
                mark = self._session.mark()
                wanted = set(rows)
                self._session.extend([head if i in wanted else [] for i in range(len(self._chunk))])
                lp = self._session.score(letters, rows=rows).sum(axis=-1)  # [eps, 10]
                self._session.rewind(mark)
            sums = list(lp)
        return [prompts.LETTERS[int(np.argmax(np.asarray(x)[:len(e.question["options"])]))]
                for e, x in zip(eps, sums)]

    def _score_letters(self, eps: Sequence[_Episode]) -> None:
        """Ends each episode with the answer read by :meth:`_read_letters`. An answer message the
        policy wrote without a readable letter is replaced (its text kept in ``written_answer``)."""
        for ep in eps:
            if ep.final_text:  # the policy's own unreadable answer: not part of the state scored
                ep.written_answer = ep.final_text
                ep.messages.pop()
        for ep, letter in zip(eps, self._read_letters(eps)):
            ep.final_text = f"{ANSWER_LEAD}{letter})."
            ep.answer_scored = True
            ep.messages.append({"role": "assistant", "content": format_action(ANSWER, ep.final_text)})

    def _choose(self, active: Sequence[_Episode]) -> list[str]:
        """The action message each active episode writes this step."""
        if self.config.mode == "generate" and not self._uses_session():
            prompt_ids = [self._prompt_ids(e.messages) for e in active]
            with self._timed("input decode"):
                return self._decode(prompt_ids, self.config.max_action_tokens)
        if not self._uses_session():
            return self._choose_unbatched(active)
        rows = self._sync_session(active)
        if self.config.mode == "generate":  # the whole action, written after each active row's state
            with self._timed("input decode"):
                outs = self._session.generate(self.config.max_action_tokens, rows=rows,
                                              temperature=self.config.temperature, seed=self._seed,
                                              eos_token_ids=self.eos)
                self._seed += 1
            return [self._text(o) for o in outs]
        names = action_names()
        with self._timed("header scoring"):  # [active, 10]
            lp = self._session.score([self._header_ids(n) for n in names], rows=rows).sum(axis=-1)
        chosen = []
        for k, ep in enumerate(active):
            scores = {n: float(lp[k, j]) for j, n in enumerate(names)}
            ep.header_logprobs.append(scores)
            chosen.append(max(scores, key=scores.get))
        # an answer chosen in letter mode writes no input: its letter is scored (see _apply)
        texts: list[str | None] = [None] * len(active)
        write = [k for k, name in enumerate(chosen) if name != ANSWER or self.config.answer_mode == "text"]
        if write:
            with self._timed("input decode"):  # only the rows that write an input, each after its header
                bodies = self._session.generate(self.config.max_action_tokens, rows=[rows[k] for k in write],
                                                prompts=[self._header_ids(chosen[k]) for k in write],
                                                temperature=self.config.temperature, seed=self._seed,
                                                eos_token_ids=self.eos)
                self._seed += 1
            for k, body_ids in zip(write, bodies):
                body = self._text(body_ids)
                texts[k] = f"Action: {chosen[k]}\nInput: {body.lstrip(' ')}"
        return texts

    def _choose_unbatched(self, active: Sequence[_Episode]) -> list[str]:
        """Score mode one question at a time (models on a mesh): the reference the session equals."""
        prompt_ids = [self._prompt_ids(e.messages) for e in active]
        chosen = []
        with self._timed("header scoring"):
            for ep, ids in zip(active, prompt_ids):
                # the system prompt is most of a state's tokens: its cache is computed once per model
                scores = self.score_actions(ids, self._system_prefix_len(ep.messages, ids))
                ep.header_logprobs.append(scores)
                chosen.append(max(scores, key=scores.get))
        heads = [ids + self._header_ids(name) for ids, name in zip(prompt_ids, chosen)]
        with self._timed("input decode"):
            bodies = self._decode(heads, self.config.max_action_tokens)
        return [f"Action: {name}\nInput: {body.lstrip(' ')}" for name, body in zip(chosen, bodies)]

    # ---- applying actions ---------------------------------------------------------------------

    def _apply(self, ep: _Episode, text: str | None, allowed: tuple[str, ...]) -> tuple[str, str] | None:
        """Records the action ``text`` (None: an ``answer`` whose letter is scored next); the
        tool call it asks for, if any, to run with the step's other calls."""
        ep.turns += 1
        if text is None:
            ep.final_text = ""  # done; _score_letters writes the answer message
            return None
        text = text.strip()
        # The policy often continues past its action into an imagined observation: keep the action.
        text = text.split("\nObservation:")[0].strip()
        try:
            action = parse_action(text, allowed)
        except ActionFormatError as e:
            ep.format_errors += 1
            ep.messages.append({"role": "assistant", "content": text or "(empty)"})
            ep.messages.append(format_error_message(str(e)))
            return None
        ep.messages.append({"role": "assistant", "content": format_action(action.name, action.text)})
        if action.name == ANSWER:
            ep.final_text = action.text
            return None
        ep.actions.append(action.name)
        if action.name == prompts.COT:
            return None
        return action.name, action.text

    def _run_tools(self, calls: Sequence[tuple[_Episode, tuple[str, str]]]) -> None:
        """Runs one step's tool calls concurrently (bounded pool) and appends each observation."""
        if not calls:
            return

        def one(call):
            return self.tool_runner(call[0], call[1], timeout_s=self.config.tool_timeout_s)

        with self._timed("tools"):
            workers = min(self.config.tool_workers, len(calls))
            if workers == 1:
                results = [one(call) for _, call in calls]
            else:
                with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                    results = list(pool.map(one, [call for _, call in calls]))
        for (ep, _), result in zip(calls, results):
            ep.messages.append(prompts.observation_message(result.ok, result.output, result.error,
                                                           self.config.observation_chars))
