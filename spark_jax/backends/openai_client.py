"""One OpenAI-compatible chat endpoint behind explicit retries, bounded concurrency and
token/cost accounting. Used by :class:`~spark_jax.judge.openai_judge.OpenAIJudge` and
:class:`~spark_jax.rollout.generators.OpenAIGenerator`."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any, Mapping

from spark_jax.backends.accounting import BackendStats, CostTracker, Pricer
from spark_jax.backends.retry import RetryPolicy, call_with_retries

API_KEY_ENV = "OPENAI_API_KEY"
# Servers such as vLLM accept any key unless started with --api-key; the client still needs one.
PLACEHOLDER_KEY = "not-needed"


def resolve_api_key(api_key: str | None, base_url: str | None, env: str = API_KEY_ENV) -> str:
    """The key from the argument, else from ``$env``; a custom ``base_url`` may go without one."""
    key = api_key or os.environ.get(env)
    if key:
        return key
    if base_url:
        return PLACEHOLDER_KEY
    raise ValueError(
        f"no API key for the OpenAI API: set {env} or pass api_key (or point base_url at a "
        "compatible server that needs none)"
    )


def _http_client(concurrency: int, timeout_s: float) -> Any:
    """The SDK's default async HTTP client with its pool sized to our concurrency: the pool
    scans its connections for every request, and the SDK's default of 1000 costs CPU per call."""
    # deferred: openai is slow to import; only an API client needs it
    import openai

    try:
        import httpx2 as httpx_mod  # the transport of openai >= 3
    except ImportError:
        import httpx as httpx_mod
    limits = httpx_mod.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s)


@dataclasses.dataclass(frozen=True)
class ChatResult:
    response: Any  # openai ChatCompletion
    attempts: int  # HTTP requests it took (1 + retries)
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def content(self) -> str | None:
        choices = getattr(self.response, "choices", None) or []
        return choices[0].message.content if choices else None

    @property
    def finish_reason(self) -> str | None:
        choices = getattr(self.response, "choices", None) or []
        return choices[0].finish_reason if choices else None


class ChatEndpoint:
    """``await create(**kwargs) -> ChatResult`` with retries and accounting.

    The AsyncOpenAI client is built with ``max_retries=0`` (retries are ours, see
    :mod:`spark_jax.backends.retry`) and rebuilt when called from a different event loop, since
    its connection pool and the semaphore belong to the loop they were first used on.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        concurrency: int = 16,
        retry: RetryPolicy = RetryPolicy(),
        prices: Mapping[str, tuple[float, float]] | None = None,
        tracker: CostTracker | None = None,
        stats: BackendStats | None = None,
        what: str = "chat completion",
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.model = model
        self.base_url = base_url
        self.api_key = resolve_api_key(api_key, base_url)
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.retry = retry
        self.pricer = Pricer(model, prices)
        self.tracker = tracker if tracker is not None else CostTracker(None)
        self.stats = stats if stats is not None else BackendStats()
        self.what = what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # deferred: see _http_client
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=self.api_key, base_url=self.base_url, timeout=self.timeout_s, max_retries=0,
                http_client=_http_client(self.concurrency, self.timeout_s),
            )
            self._semaphore = asyncio.Semaphore(self.concurrency)
            self._loop = loop

    @property
    def semaphore(self) -> asyncio.Semaphore:
        """Bounds requests in flight (held across retries and their backoff waits)."""
        self._bind()
        assert self._semaphore is not None
        return self._semaphore

    async def create(self, **kwargs: Any) -> ChatResult:
        """One chat completion (caller holds :attr:`semaphore`). Raises RequestFailed."""
        self._bind()
        client = self._client

        # deferred: see _http_client
        from openai.types.chat import ChatCompletion

        body = {"model": self.model, **kwargs}

        async def attempt() -> Any:
            self.stats.requests += 1
            # The SDK's documented low-level ``post`` (same HTTP, errors and timeouts as
            # ``chat.completions.create``) skips the recursive TypedDict transform of the
            # request, a large share of the client's CPU per call, which bounds throughput at
            # high concurrency. The body is plain JSON we build ourselves.
            return await client.post("/chat/completions", body=body, cast_to=ChatCompletion)

        def on_retry(reason: str, delay: float) -> None:
            self.stats.retries += 1

        response, attempts = await call_with_retries(attempt, self.retry, on_retry=on_retry, what=self.what)
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.pricer.cost(prompt, completion)
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        self.stats.cost_usd += cost
        self.tracker.add(cost)
        return ChatResult(response, attempts, prompt, completion, cost)

    async def aclose(self) -> None:
        """Closes the connection pool (only the current loop's; an older loop's is already gone)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None
        self._loop = None
