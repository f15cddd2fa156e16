"""Protocols between the rollout driver and its backends (judges and generators)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

from spark_jax.backends.accounting import BackendStats


@dataclasses.dataclass(frozen=True)
class JudgeRequest:
    """What a judge sees: the question, the trajectory so far, and the candidate actions."""

    question: Mapping[str, Any]  # an MMLU-Pro record (question, options, category, ...)
    messages: Sequence[Mapping[str, str]]  # the state s_t as chat messages
    step: int  # 0-based
    actions: tuple[str, ...]  # the candidates, normally spark_jax.tools.TOOL_NAMES


@dataclasses.dataclass(frozen=True)
class JudgeResult:
    """Scores on 0-10 per action, or ok=False with the reason (never a silent default score)."""

    ok: bool
    scores: Mapping[str, float] | None = None
    error: str | None = None
    cached: bool = False
    attempts: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Judge(Protocol):
    name: str  # model identity; part of the cache key and the run's config hash
    stats: BackendStats  # calls, cache hits, cost since it was built (the progress bar reads them)

    async def score(self, request: JudgeRequest) -> JudgeResult: ...


class Generator(Protocol):
    """Writes the assistant's next message (a thought, a tool argument, or a final answer)."""

    name: str

    async def complete(
        self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, stop: Sequence[str] | None = None
    ) -> str: ...
