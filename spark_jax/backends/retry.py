"""Explicit retries for API calls: exponential backoff with full jitter, honouring Retry-After.

Shared by the OpenAI judge and the OpenAI-compatible generator. The openai client's own
retries are switched off (``max_retries=0``) so that every retry happens here, where it is
counted, bounded and tested.

Retried: timeouts, connection errors, HTTP 408, 409, 429 and 5xx. Anything else (400 bad
request, 401/403 credentials, 404 unknown model) fails at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import random
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt; delays in seconds."""

    max_retries: int = 6
    base_delay_s: float = 0.5  # first backoff window; doubles per retry
    max_delay_s: float = 30.0  # cap of the backoff window
    max_retry_after_s: float = 120.0  # a server's Retry-After is honoured up to this

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ValueError(
                f"retry delays must be >= 0, got base_delay_s={self.base_delay_s}, "
                f"max_delay_s={self.max_delay_s}, max_retry_after_s={self.max_retry_after_s}"
            )


class RequestFailed(Exception):
    """A request that failed for good: not retryable, or retries exhausted."""

    def __init__(self, message: str, *, attempts: int, status_code: int | None, exhausted: bool):
        super().__init__(message)
        self.attempts = attempts
        self.status_code = status_code
        self.exhausted = exhausted


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def retry_after_from_headers(headers: Any) -> float | None:
    """Retry-After from response headers; OpenAI's ``retry-after-ms`` takes precedence."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def backoff_delay(retry_index: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max_delay, base * 2**retry_index)]."""
    window = min(policy.max_delay_s, policy.base_delay_s * (2.0 ** retry_index))
    return (rng or random).uniform(0.0, window)


def retry_delay(retry_index: int, policy: RetryPolicy, retry_after: float | None,
                rng: random.Random | None = None) -> float:
    """The wait before retry ``retry_index`` (0-based): the server's Retry-After when it gave
    one (capped at ``max_retry_after_s``), else the jittered exponential backoff."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after_s)
    return backoff_delay(retry_index, policy, rng)


def classify(exc: BaseException) -> tuple[bool, float | None, int | None, str]:
    """(retryable, retry_after_s, status_code, short reason) for an exception from a call."""
    # deferred: openai is slow to import and only the API backends raise its errors
    import openai

    if isinstance(exc, openai.APITimeoutError) or isinstance(exc, asyncio.TimeoutError):
        return True, None, None, "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return True, None, None, f"connection error ({exc})"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status in RETRYABLE_STATUS or status >= 500
        retry_after = retry_after_from_headers(getattr(exc.response, "headers", None))
        return retryable, retry_after, status, f"HTTP {status} ({exc.message})"
    return False, None, None, f"{type(exc).__name__}: {exc}"


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[str, float], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
    what: str = "request",
) -> tuple[T, int]:
    """Awaits ``fn()`` until it succeeds; returns (result, attempts).

    Raises :class:`RequestFailed` (with ``attempts``) when an error is not retryable or after
    ``policy.max_retries`` retries. ``on_retry(reason, delay_s)`` is called before each wait.
    """
    for attempt in range(policy.max_retries + 1):
        try:
            return await fn(), attempt + 1
        except Exception as e:  # classified below; anything unknown is not retried
            retryable, retry_after, status, reason = classify(e)
            if not retryable:
                raise RequestFailed(f"{what} failed: {reason}", attempts=attempt + 1,
                                    status_code=status, exhausted=False) from e
            if attempt == policy.max_retries:
                raise RequestFailed(
                    f"{what} failed after {attempt + 1} attempts; last error: {reason}",
                    attempts=attempt + 1, status_code=status, exhausted=True,
                ) from e
            delay = retry_delay(attempt, policy, retry_after, rng)
            if on_retry is not None:
                on_retry(reason, delay)
            await sleep(delay)
    raise AssertionError("unreachable")
