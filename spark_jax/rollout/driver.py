"""The Stage 1 rollout driver: judged, rarity-first trajectories written as step records.

Questions run in blocks of ``questions_per_shard``. Inside a block all trajectories advance
in lockstep, one step at a time: the judge scores every active trajectory's candidates at
once (up to ``concurrency`` calls in flight), then the selection rule picks actions in the
fixed block order, then the generator writes every chosen action's text (one batched
``complete_many`` call for in-process models), then the tools run. Because the choices are
made in a fixed (step, question) order from the usage counts at the block's start, the
records do not depend on timing or on ``concurrency``. A finished block becomes one shard,
written atomically, so a killed run loses at most the block in flight and a rerun redoes
exactly that block with exactly the same usage counts.

The judge, generator and tool runner are injected (see ``spark_jax.protocol.interfaces``):
any objects with ``judge.score(JudgeRequest) -> JudgeResult`` (async),
``generator.complete(messages, max_tokens=, stop=) -> str`` (async; optionally
``complete_many(list_of_messages, max_tokens=, stop=) -> list[str]``, sync or async), and
``tool_runner(name, argument, timeout_s=) -> ToolResult(ok, output, error, elapsed_s)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import math
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

from spark_jax.core.config_io import to_dict
from spark_jax.data.mmlu_pro import stratified_split
from spark_jax.protocol import prompts
from spark_jax.protocol.actions import ANSWER, format_action
from spark_jax.protocol.answers import extract_answer, extract_answer_strict
from spark_jax.protocol.interfaces import Generator, Judge, JudgeRequest
from spark_jax.rollout.config import GenerateConfig, hashed_settings, settings_hash
from spark_jax.rollout.rewards import rarity, step_reward
from spark_jax.rollout.selection import UsageCounts, select_action
from spark_jax.rollout.store import RunStore, StoreCorruptError

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
class RunSummary:
    run_dir: pathlib.Path
    resumed: bool
    train_questions: int
    completed_questions: int
    records: int
    failed: dict[int, dict[str, Any]]
    usage_counts: dict[str, int]
    stats: RunStats


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
        """A judged step for ``trajs``: score, select (in block order), generate, run tools."""
        results = await self._judge_all(trajs, step)
        chosen: list[tuple[_Trajectory, dict[str, float], str, float]] = []
        for tr, res in zip(trajs, results):
            scores, err = self._checked_scores(res)
            if err:
                tr.fail(step, err)
                continue
            action = select_action(scores, self.cfg.selection, threshold=self.cfg.threshold,
                                   usage=live, order=self.candidates)
            chosen.append((tr, scores, action, rarity(action, live)))
            live.add(action)
        texts: dict[int, str | BaseException] = {}
        for kind, max_tokens in (("tool", self.cfg.max_tokens_tool), ("cot", self.cfg.max_tokens_thought)):
            group = [i for i, c in enumerate(chosen) if (c[2] == prompts.COT) == (kind == "cot")]
            reqs = [prompts.generator_messages(chosen[i][0].messages, chosen[i][2], self.specs) for i in group]
            texts.update(zip(group, await self._generate(reqs, max_tokens)))
        tool_jobs = {}
        for i, (tr, scores, action, rar) in enumerate(chosen):
            raw = texts[i]
            if isinstance(raw, BaseException):
                tr.fail(step, f"generator raised {type(raw).__name__}: {raw}")
                continue
            text = prompts.clean_generation(raw, action)
            if not text:
                tr.fail(step, f"generator wrote an empty {'thought' if action == prompts.COT else action + ' input'}")
                continue
            if action != prompts.COT:
                tool_jobs[i] = self._run_tool(action, text)
        tool_out = dict(zip(tool_jobs, await asyncio.gather(*tool_jobs.values())))
        for i, (tr, scores, action, rar) in enumerate(chosen):
            if not tr.active:
                continue
            text = prompts.clean_generation(texts[i], action)
            reward, parts = step_reward(score=scores[action], rarity_value=rar, correct=None,
                                        weights=self.cfg.rewards)
            fields = dict(
                action_text=format_action(action, text),
                selected=action,
                candidates=[{"action": a, "score": s} for a, s in scores.items()],
                reward=reward,
                reward_components=parts,
            )
            obs_msg = None
            if action == prompts.COT:
                fields["thought"] = text
            else:
                ok, output, error = tool_out[i]
                obs_msg = prompts.observation_message(ok, output, error, self.cfg.max_observation_chars)
                fields["tool_input"] = text
                fields["observation"] = obs_msg["content"][len("Observation: "):]
            tr.records.append(self._record(tr, step, **fields))
            tr.messages.append({"role": "assistant", "content": fields["action_text"]})
            if obs_msg is not None:
                tr.messages.append(obs_msg)
            if self.cfg.stop_on_early_answer and extract_answer_strict(text) is not None:
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


def _judge_counter(judge: Any, name: str, fallback: float) -> float:
    """``judge.<name>`` or ``judge.stats.<name>`` when the judge keeps that counter, else ours."""
    for owner in (judge, getattr(judge, "stats", None)):
        v = getattr(owner, name, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    return fallback


async def generate_async(
    cfg: GenerateConfig,
    *,
    questions: Sequence[Mapping[str, Any]],
    data_sha256: str,
    judge: Judge,
    generator: Generator,
    tool_runner: ToolRunner,
    out_dir: str | pathlib.Path,
) -> RunSummary:
    """Runs (or resumes) Stage 1 generation into ``out_dir``; see the module docstring."""
    t0 = time.perf_counter()
    settings = hashed_settings(cfg, data_sha256=data_sha256, judge=str(judge.name), generator=str(generator.name))
    digest = settings_hash(settings)
    by_id = {q["question_id"]: q for q in questions}
    store = RunStore(out_dir)
    split = None
    if not store.manifest_path.is_file():
        train, heldout = stratified_split(questions, cfg.num_questions, cfg.heldout_per_category, cfg.seed)
        cats: dict[str, int] = {}
        for qid in train:
            cats[by_id[qid]["category"]] = cats.get(by_id[qid]["category"], 0) + 1
        split = {"questions": {"train": train, "heldout": heldout, "train_per_category": dict(sorted(cats.items()))},
                 "data": cfg.data, "config": _plain(cfg)}
    resumed = store.open(settings, digest, split or {})
    try:
        return await _generate_opened(cfg, store, resumed, by_id, judge, generator, tool_runner, t0)
    finally:
        store.close()


async def _generate_opened(cfg, store, resumed, by_id, judge, generator, tool_runner, t0) -> RunSummary:
    train = list(store.manifest["questions"]["train"])
    missing = [qid for qid in train if qid not in by_id]
    if missing:
        raise StoreCorruptError(f"{store.manifest_path}: {len(missing)} question id(s) not in the data, e.g. {missing[:5]}")

    per_question, usage, shards = store.scan()
    expected = None if cfg.stop_on_early_answer else cfg.steps
    train_set = set(train)
    bad = {q: n for q, n in per_question.items() if (expected and n != expected) or q not in train_set}
    if bad:
        raise StoreCorruptError(f"{store.run_dir}: questions with unexpected records (question_id: count) {dict(list(bad.items())[:5])}")
    pending = [qid for qid in train if qid not in per_question]
    failed: dict[int, dict[str, Any]] = {}
    driver = RolloutDriver(cfg, judge=judge, generator=generator, tool_runner=tool_runner)
    stats = driver.stats

    from tqdm import tqdm

    bar = tqdm(total=len(train), initial=len(train) - len(pending), unit="q", desc="generate",
               disable=not cfg.progress, dynamic_ncols=True)

    def show(step: int | None = None) -> None:
        bar.set_postfix(
            block_step=f"{step + 1}/{cfg.steps}" if step is not None else "-",
            judge_calls=int(_judge_counter(judge, "calls", stats.judge_calls)),
            cache_hits=int(_judge_counter(judge, "cache_hits", stats.judge_cache_hits)),
            cost=f"${_judge_counter(judge, 'cost_usd', stats.judge_cost_usd):.4f}",
            failed=len(failed),
            refresh=True,
        )

    show()
    driver.on_step = show
    try:
        for start in range(0, len(pending), cfg.questions_per_shard):
            block = [by_id[qid] for qid in pending[start:start + cfg.questions_per_shard]]
            records, block_failed, usage_after = await driver.run_block(block, usage)
            if records:
                path = store.write_shard(records)
                qids = list(dict.fromkeys(r["question_id"] for r in records))
                shards.append({"file": path.name, "question_ids": qids, "records": len(records)})
            usage = usage_after
            failed.update(block_failed)
            for qid, info in block_failed.items():
                log.warning("question %s failed (it will be retried by the next run): %s", qid, info["error"])
            stats.questions_done += len(block) - len(block_failed)
            stats.questions_failed += len(block_failed)
            stats.seconds = time.perf_counter() - t0
            store.record_progress(shards, usage, failed, dataclasses.asdict(stats))
            bar.update(len(block))
            show()
        per_question, usage_final, _ = store.scan()
    finally:
        bar.close()
    return RunSummary(
        run_dir=store.run_dir, resumed=resumed, train_questions=len(train),
        completed_questions=len(per_question), records=sum(per_question.values()), failed=failed,
        usage_counts=usage_final.to_dict(), stats=stats,
    )


def _plain(cfg: GenerateConfig) -> dict[str, Any]:
    return to_dict(cfg)


def generate(cfg: GenerateConfig, **kwargs: Any) -> RunSummary:
    """Synchronous wrapper around :func:`generate_async`; closes backends that have ``aclose``
    (HTTP clients) on the same event loop."""

    async def run_and_close() -> RunSummary:
        try:
            return await generate_async(cfg, **kwargs)
        finally:
            for backend in (kwargs.get("judge"), kwargs.get("generator")):
                close = getattr(backend, "aclose", None)
                if close is not None:
                    await close()

    return asyncio.run(run_and_close())
