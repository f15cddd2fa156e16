"""The API judge: GPT-4o (or any OpenAI-compatible server) scores the candidates with
structured output, validated here; retries, re-asks, cache, cost and budget included.

Per step: cache lookup (a hit costs nothing) -> budget check -> wait for a concurrency slot
-> budget check again -> request with ``response_format`` = the score schema (transport
errors retried with backoff) -> validate -> on a malformed/out-of-range reply, re-ask up to
``max_reasks`` times with the error spelled out -> ``JudgeResult(ok=False, error=...)`` if it
still fails. Only valid replies are cached.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from spark_jax.backends.accounting import BackendStats, BudgetExceeded, CostTracker
from spark_jax.backends.openai_client import ChatEndpoint
from spark_jax.backends.retry import RequestFailed, RetryPolicy
from spark_jax.judge import prompts
from spark_jax.judge.cache import JudgeCache, cache_key
from spark_jax.protocol.interfaces import JudgeRequest, JudgeResult

log = logging.getLogger(__name__)

# Errors that are the same for every request (bad key, no access, unknown model): recording
# them as thousands of failed steps would hide the problem, so they stop the run instead.
FATAL_STATUS = frozenset({401, 403, 404})


class JudgeBackendError(RuntimeError):
    """The judge cannot work at all (credentials, model name): fix the config and rerun."""


class OpenAIJudge:
    """``await judge.score(request) -> JudgeResult`` against the chat completions API."""

    def __init__(
        self,
        model: str = "gpt-4o",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        max_retries: int = 6,
        max_reasks: int = 2,
        timeout_s: float = 60.0,
        cache_dir: str | None = None,
        max_cost_usd: float | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        temperature: float = 0.0,
        max_tokens: int = 300,
        retry: RetryPolicy | None = None,
        tracker: CostTracker | None = None,
    ):
        if max_reasks < 0:
            raise ValueError(f"max_reasks must be >= 0, got {max_reasks}")
        self.name = model
        self.max_reasks = max_reasks
        self.temperature = temperature
        self.max_tokens = max_tokens
        if tracker is not None and max_cost_usd is not None:
            raise ValueError("give either a shared tracker or max_cost_usd, not both")
        self.stats = BackendStats()
        self.tracker = tracker if tracker is not None else CostTracker(max_cost_usd)
        self.cache = JudgeCache(cache_dir) if cache_dir else None
        self.endpoint = ChatEndpoint(
            model=model, base_url=base_url, api_key=api_key, timeout_s=timeout_s,
            concurrency=concurrency,
            retry=retry if retry is not None else RetryPolicy(max_retries=max_retries),
            prices=prices, tracker=self.tracker, stats=self.stats, what=f"judge request to {model}",
        )

    async def score(self, request: JudgeRequest) -> JudgeResult:
        """Scores every action in ``request.actions``; raises BudgetExceeded / JudgeBackendError."""
        actions = tuple(request.actions)
        messages = prompts.judge_messages(request)
        fmt = prompts.response_format(actions)
        key = cache_key(self.name, messages, fmt) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            if hit is not None:
                try:
                    scores = prompts.parse_scores(hit.get("content"), actions)
                except prompts.ScoreFormatError as e:
                    log.warning("judge cache entry %s does not validate (%s); asking again", key, e)
                else:
                    self.stats.cache_hits += 1
                    return JudgeResult(ok=True, scores=scores, cached=True, attempts=0)

        self.tracker.check()
        async with self.endpoint.semaphore:
            self.tracker.check()  # others may have spent the rest while this call waited
            self.stats.calls += 1
            result = await self._ask(messages, fmt, actions)
        if result.ok and key is not None:
            self.cache.put(key, {
                "content": result_content(result, actions),
                "model": self.name,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
            })
        if not result.ok:
            self.stats.failures += 1
        return result

    async def _ask(self, messages: list[dict[str, str]], fmt: dict[str, Any], actions: tuple[str, ...]) -> JudgeResult:
        conversation = list(messages)
        attempts = prompt_tokens = completion_tokens = 0
        cost = 0.0
        errors: list[str] = []
        for ask in range(self.max_reasks + 1):
            if ask:
                self.stats.reasks += 1
            try:
                res = await self.endpoint.create(
                    messages=conversation, response_format=fmt,
                    temperature=self.temperature, max_tokens=self.max_tokens,
                )
            except RequestFailed as e:
                attempts += e.attempts
                if e.status_code in FATAL_STATUS:
                    raise JudgeBackendError(f"{e} -- check the API key, base_url and model name") from e
                return JudgeResult(ok=False, error=str(e), attempts=attempts, prompt_tokens=prompt_tokens,
                                   completion_tokens=completion_tokens, cost_usd=cost)
            attempts += res.attempts
            prompt_tokens += res.prompt_tokens
            completion_tokens += res.completion_tokens
            cost += res.cost_usd
            content = res.content
            try:
                refusal = getattr(res.response.choices[0].message, "refusal", None)
                if refusal:
                    raise prompts.ScoreFormatError(f"the model refused: {refusal[:120]!r}")
                if res.finish_reason == "length":
                    raise prompts.ScoreFormatError(f"the reply was cut off at max_tokens={self.max_tokens}")
                scores = prompts.parse_scores(content, actions)
            except prompts.ScoreFormatError as e:
                errors.append(str(e))
                conversation += [{"role": "assistant", "content": content or ""},
                                 prompts.reask_message(str(e), actions)]
                continue
            return JudgeResult(ok=True, scores=scores, attempts=attempts, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens, cost_usd=cost)
        return JudgeResult(
            ok=False,
            error=f"invalid judge reply after {self.max_reasks + 1} asks: " + "; ".join(errors),
            attempts=attempts, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost_usd=cost,
        )

    async def aclose(self) -> None:
        await self.endpoint.aclose()


def result_content(result: JudgeResult, actions: tuple[str, ...]) -> str:
    """The canonical reply text stored in the cache (validated again on every hit)."""
    assert result.scores is not None
    return json.dumps({"scores": {a: int(result.scores[a]) for a in actions}})


__all__ = ["OpenAIJudge", "JudgeBackendError", "BudgetExceeded"]
