"""One block of Stage 1 questions, stepped in lockstep (``RolloutDriver.run_block``).

At every step the judge scores every active trajectory's candidates at once (up to
``concurrency`` calls in flight), the selection rule picks actions in the fixed block order,
the generator writes every chosen action's text (one batched ``complete_many`` call for
in-process models), and the tools run. The last step (or an early answer) is the unjudged
answer step. Choices depend only on the (step, question) order and the usage counts at the
block's start, never on timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
from typing import Any, Callable, Mapping, Sequence

from spark_jax.protocol import prompts
from spark_jax.protocol.actions import ANSWER, format_action
from spark_jax.protocol.answers import extract_answer, extract_answer_strict
from spark_jax.protocol.interfaces import Generator, Judge, JudgeRequest
from spark_jax.rollout.config import GenerateConfig
from spark_jax.rollout.rewards import rarity, step_reward
from spark_jax.rollout.selection import UsageCounts, select_action

log = logging.getLogger(__name__)

# Generation stops before the model starts imitating the next turn of the protocol.
_STOP = ["\nObservation:", "\nAction:"]

ToolRunner = Callable[..., Any]


@dataclasses.dataclass
class _Trajectory:
    question: Mapping[str, Any]
    messages: list[dict[str, str]]
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    answer_next: bool = False
    done: bool = False
    error: str | None = None

    @property
    def active(self) -> bool:
        return not self.done and self.error is None

    def fail(self, step: int, what: str) -> None:
        self.error = f"step {step}: {what}"


@dataclasses.dataclass
class RunStats:
    judge_calls: int = 0
    judge_cache_hits: int = 0
    judge_cost_usd: float = 0.0
    generator_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    questions_done: int = 0
    questions_failed: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class _Choice:
    """One trajectory's judged step on its way through the phases of ``_act``."""

    traj: _Trajectory
    scores: dict[str, float]  # the judge's 0-10 score per candidate
    action: str  # the selected candidate
    rarity: float  # of the action under the usage counts at selection time
    text: str = ""  # the generator's cleaned tool input or thought
    tool_result: tuple[bool, str, str | None] | None = None  # (ok, output, error)


class RolloutDriver:
    def __init__(
        self,
        cfg: GenerateConfig,
        *,
        judge: Judge,
        generator: Generator,
        tool_runner: ToolRunner,
        specs: Sequence[prompts.ActionSpec] | None = None,
    ):
        self.cfg = cfg
        self.judge = judge
        self.generator = generator
        self.tool_runner = tool_runner
        self.specs = tuple(specs or prompts.action_specs())
        self.candidates = prompts.candidate_actions(self.specs)
        self.stats = RunStats()
        self._sem = asyncio.Semaphore(cfg.concurrency)  # backend calls in flight
        self.on_step: Callable[[int], None] | None = None  # called after each lockstep step

    # -- backend calls -----------------------------------------------------------------
    async def _bounded(self, coro):
        async with self._sem:
            return await coro

    async def _judge_all(self, trajs: list[_Trajectory], step: int) -> list[Any]:
        async def one(tr: _Trajectory):
            req = JudgeRequest(question=tr.question, messages=tuple(dict(m) for m in tr.messages),
                               step=step, actions=self.candidates)
            return await self.judge.score(req)

        results = await asyncio.gather(*(self._bounded(one(tr)) for tr in trajs), return_exceptions=True)
        for res in results:
            if not isinstance(res, BaseException):
                self.stats.judge_calls += 1
                self.stats.judge_cache_hits += int(bool(getattr(res, "cached", False)))
                self.stats.judge_cost_usd += float(getattr(res, "cost_usd", 0.0) or 0.0)
        return results

    async def _generate(self, requests: list[list[dict[str, str]]], max_tokens: int) -> list[str | BaseException]:
        """One text per request (or the exception that request raised)."""
        if not requests:
            return []
        self.stats.generator_calls += len(requests)
        many = getattr(self.generator, "complete_many", None)
        if many is not None:
            out: list[str | BaseException] = []
            for i in range(0, len(requests), self.cfg.concurrency):
                chunk = requests[i:i + self.cfg.concurrency]
                try:
                    texts = many(chunk, max_tokens=max_tokens, stop=_STOP)
                    if inspect.isawaitable(texts):
                        texts = await texts
                    texts = list(texts)
                    if len(texts) != len(chunk):
                        raise RuntimeError(f"complete_many returned {len(texts)} texts for {len(chunk)} requests")
                    out.extend(texts)
                except Exception as e:
                    # Isolate the request that broke the batch (e.g. one prompt too long):
                    # the others are answered one by one and only the culprit fails.
                    log.warning("batched generation failed (%s: %s); retrying its %d requests one by one",
                                type(e).__name__, e, len(chunk))
                    out.extend(await asyncio.gather(
                        *(self.generator.complete(r, max_tokens=max_tokens, stop=_STOP) for r in chunk),
                        return_exceptions=True,
                    ))
            return out
        return list(await asyncio.gather(
            *(self._bounded(self.generator.complete(r, max_tokens=max_tokens, stop=_STOP)) for r in requests),
            return_exceptions=True,
        ))

    async def _run_tool(self, name: str, argument: str) -> tuple[bool, str, str | None]:
        async def call():
            return await asyncio.to_thread(self.tool_runner, name, argument, timeout_s=self.cfg.tool_timeout_s)

        self.stats.tool_calls += 1
        try:
            res = await self._bounded(call())
            ok, output, error = bool(res.ok), str(res.output or ""), res.error
        except Exception as e:  # a crashing tool is an observation, not a lost question
            ok, output, error = False, "", f"{type(e).__name__}: {e}"
        self.stats.tool_errors += int(not ok)
        return ok, output, error

    # -- one block of questions ------------------------------------------------------------
    def _checked_scores(self, res: Any) -> tuple[dict[str, float] | None, str | None]:
        if isinstance(res, BaseException):
            return None, f"judge raised {type(res).__name__}: {res}"
        if not res.ok:
            return None, f"judge failed after {getattr(res, 'attempts', '?')} attempt(s): {res.error}"
        scores = dict(res.scores or {})
        out = {}
        for a in self.candidates:
            s = scores.get(a)
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s <= 10:
                return None, f"judge gave no valid 0-10 score for {a!r} (got {s!r})"
            out[a] = float(s)
        return out, None

    def _record(self, tr: _Trajectory, step: int, **fields: Any) -> dict[str, Any]:
        q = tr.question
        rec = {
            "question_id": q["question_id"],
            "category": q["category"],
            "step": step,
            "messages": [dict(m) for m in tr.messages],
            "selection_rule": self.cfg.selection,
            "tool_input": None,
            "observation": None,
            "thought": None,
            "final_answer": None,
            "correct": None,
            "gold": q["answer"],
        }
        rec.update(fields)
        return rec

    async def _act(self, trajs: list[_Trajectory], step: int, live: UsageCounts) -> None:
        """A judged step for ``trajs``, in five phases: score, select (in block order), write the
        inputs, run the tools, record. A trajectory that fails a phase drops out of the next ones."""
        scored = await self._score(trajs, step)
        choices = self._select(scored, live)
        await self._write_inputs(choices, step)
        await self._run_tools(choices)
        for c in choices:
            if c.traj.active:
                self._record_step(c, step)

    async def _score(self, trajs: list[_Trajectory], step: int) -> list[tuple[_Trajectory, dict[str, float]]]:
        scored = []
        for tr, res in zip(trajs, await self._judge_all(trajs, step)):
            scores, err = self._checked_scores(res)
            if err:
                tr.fail(step, err)
            else:
                scored.append((tr, scores))
        return scored

    def _select(self, scored: list[tuple[_Trajectory, dict[str, float]]], live: UsageCounts) -> list[_Choice]:
        """The selection rule, question by question in block order: each choice updates the
        usage counts the next one sees."""
        choices = []
        for tr, scores in scored:
            action = select_action(scores, self.cfg.selection, threshold=self.cfg.threshold,
                                   usage=live, order=self.candidates)
            choices.append(_Choice(tr, scores, action, rarity(action, live)))
            live.add(action)
        return choices

    async def _write_inputs(self, choices: list[_Choice], step: int) -> None:
        """The generator writes each tool input (one batch) and each thought (another batch)."""
        for is_cot, max_tokens in ((False, self.cfg.max_tokens_tool), (True, self.cfg.max_tokens_thought)):
            group = [c for c in choices if (c.action == prompts.COT) == is_cot]
            reqs = [prompts.generator_messages(c.traj.messages, c.action, self.specs) for c in group]
            for c, raw in zip(group, await self._generate(reqs, max_tokens)):
                if isinstance(raw, BaseException):
                    c.traj.fail(step, f"generator raised {type(raw).__name__}: {raw}")
                    continue
                c.text = prompts.clean_generation(raw, c.action)
                if not c.text:
                    what = "thought" if c.action == prompts.COT else c.action + " input"
                    c.traj.fail(step, f"generator wrote an empty {what}")

    async def _run_tools(self, choices: list[_Choice]) -> None:
        calls = [c for c in choices if c.traj.active and c.action != prompts.COT]
        for c, result in zip(calls, await asyncio.gather(*(self._run_tool(c.action, c.text) for c in calls))):
            c.tool_result = result

    def _record_step(self, c: _Choice, step: int) -> None:
        """The step's record, and the action (and observation) appended to the state."""
        reward, parts = step_reward(score=c.scores[c.action], rarity_value=c.rarity, correct=None,
                                    weights=self.cfg.rewards)
        fields = dict(
            action_text=format_action(c.action, c.text),
            selected=c.action,
            candidates=[{"action": a, "score": s} for a, s in c.scores.items()],
            reward=reward,
            reward_components=parts,
        )
        obs_msg = None
        if c.action == prompts.COT:
            fields["thought"] = c.text
        else:
            ok, output, error = c.tool_result
            obs_msg = prompts.observation_message(ok, output, error, self.cfg.max_observation_chars)
            fields["tool_input"] = c.text
            fields["observation"] = obs_msg["content"][len("Observation: "):]
        tr = c.traj
        tr.records.append(self._record(tr, step, **fields))
        tr.messages.append({"role": "assistant", "content": fields["action_text"]})
        if obs_msg is not None:
            tr.messages.append(obs_msg)
        if self.cfg.stop_on_early_answer and extract_answer_strict(c.text) is not None:
            tr.answer_next = True

    async def _answer(self, trajs: list[_Trajectory], step: int) -> None:
        """The final (unjudged) step: the generator answers; the letter is scored against gold."""
        reqs = [prompts.generator_messages(tr.messages, ANSWER, self.specs) for tr in trajs]
        for tr, raw in zip(trajs, await self._generate(reqs, self.cfg.max_tokens_answer)):
            if isinstance(raw, BaseException):
                tr.fail(step, f"generator raised {type(raw).__name__}: {raw}")
                continue
            text = prompts.clean_generation(raw, ANSWER)
            if not text:
                tr.fail(step, "generator wrote an empty final answer")
                continue
            letter = extract_answer(text)
            correct = letter == tr.question["answer"]
            reward, parts = step_reward(score=None, rarity_value=None, correct=correct, weights=self.cfg.rewards)
            tr.records.append(self._record(
                tr, step, action_text=format_action(ANSWER, text), selected=ANSWER, candidates=[],
                reward=reward, reward_components=parts, final_answer=letter, correct=correct,
            ))
            tr.messages.append({"role": "assistant", "content": format_action(ANSWER, text)})
            tr.done = True

    async def run_block(
        self, questions: Sequence[Mapping[str, Any]], usage: UsageCounts
    ) -> tuple[list[dict[str, Any]], dict[int, dict[str, Any]], UsageCounts]:
        """(records of the completed questions, failures by question_id, usage after the block)."""
        trajs = [_Trajectory(q, prompts.initial_messages(q, self.specs)) for q in questions]
        live = usage.copy()
        for step in range(self.cfg.steps):
            active = [tr for tr in trajs if tr.active]
            if not active:
                break
            answering = [tr for tr in active if tr.answer_next or step == self.cfg.steps - 1]
            acting = [tr for tr in active if not (tr.answer_next or step == self.cfg.steps - 1)]
            if acting:
                await self._act(acting, step, live)
            if answering:
                await self._answer(answering, step)
            if self.on_step is not None:
                self.on_step(step)
        done = [tr for tr in trajs if tr.error is None]
        records = [r for tr in done for r in tr.records]
        # The counts carried forward are those of the records kept: exactly what a resumed run
        # recomputes from the shards.
        after = usage.copy()
        after.update(r["selected"] for r in records if r["selected"] != ANSWER)
        failed = {tr.question["question_id"]: {"error": tr.error, "category": tr.question["category"]}
                  for tr in trajs if tr.error is not None}
        return records, failed, after
