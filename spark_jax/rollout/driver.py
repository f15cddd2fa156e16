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
import logging
import pathlib
import time
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from spark_jax.core.config_io import to_dict
from spark_jax.data.mmlu_pro import stratified_split
from spark_jax.protocol.interfaces import Generator, Judge
from spark_jax.rollout.block import RolloutDriver, RunStats, ToolRunner
from spark_jax.rollout.config import GenerateConfig, hashed_settings, settings_hash
from spark_jax.rollout.store import RunStore, StoreCorruptError

log = logging.getLogger(__name__)


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
                 "data": cfg.data, "config": to_dict(cfg)}
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

    bar = tqdm(total=len(train), initial=len(train) - len(pending), unit="q", desc="generate",
               disable=not cfg.progress, dynamic_ncols=True)

    def show(step: int | None = None) -> None:
        bar.set_postfix(
            block_step=f"{step + 1}/{cfg.steps}" if step is not None else "-",
            judge_calls=judge.stats.calls,
            cache_hits=judge.stats.cache_hits,
            cost=f"${judge.stats.cost_usd:.4f}",
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
