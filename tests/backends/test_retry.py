import asyncio
import random

import openai

try:  # the HTTP library under the installed openai client (httpx2 for openai 3.x, httpx before)
    import httpx2 as httpx
except ImportError:
    import httpx
import pytest

from spark_jax.backends.retry import (
    RequestFailed,
    RetryPolicy,
    backoff_delay,
    call_with_retries,
    classify,
    parse_retry_after,
    retry_after_from_headers,
    retry_delay,
)
from spark_jax.testing.openai_loopback import http_date


def status_error(status, headers=None):
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    resp = httpx.Response(status, headers=headers or {}, request=req)
    cls = {429: openai.RateLimitError, 500: openai.InternalServerError, 400: openai.BadRequestError,
           401: openai.AuthenticationError}.get(status, openai.APIStatusError)
    return cls(f"HTTP {status}", response=resp, body=None)


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None and parse_retry_after("") is None
    assert 8.0 <= parse_retry_after(http_date(10)) <= 10.0
    assert parse_retry_after(http_date(-30)) == 0.0  # a date in the past means "now"


def test_retry_after_ms_header_wins():
    assert retry_after_from_headers({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_from_headers({"retry-after": "2"}) == 2.0
    assert retry_after_from_headers({}) is None


def test_backoff_is_full_jitter_within_a_doubling_capped_window():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    for i, window in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        delays = [backoff_delay(i, policy, rng) for _ in range(300)]
        assert 0.0 <= min(delays) and max(delays) <= window
        assert max(delays) > 0.8 * window  # spread over the whole window, not a fixed value


def test_retry_after_is_honoured_up_to_its_cap():
    policy = RetryPolicy(base_delay_s=0.5, max_retry_after_s=5.0)
    assert retry_delay(0, policy, 3.0) == 3.0
    assert retry_delay(0, policy, 500.0) == 5.0


def test_classification():
    assert classify(status_error(429, {"retry-after": "2"}))[:3] == (True, 2.0, 429)
    assert classify(status_error(500))[0] and classify(status_error(503))[0]
    assert classify(status_error(400))[0] is False and classify(status_error(401))[0] is False
    assert classify(openai.APITimeoutError(httpx.Request("POST", "http://x")))[0]
    assert classify(ValueError("bug"))[0] is False


def run(coro):
    return asyncio.run(coro)


def test_retries_then_success_counts_attempts_and_waits():
    errors = [status_error(500), status_error(429, {"retry-after": "0.2"})]
    waits = []

    async def fn():
        if errors:
            raise errors.pop(0)
        return "ok"

    async def fake_sleep(s):
        waits.append(s)

    result, attempts = run(call_with_retries(fn, RetryPolicy(max_retries=5, base_delay_s=0.1), sleep=fake_sleep))
    assert (result, attempts) == ("ok", 3)
    assert 0.0 <= waits[0] <= 0.1 and waits[1] == 0.2


def test_attempts_are_bounded():
    calls = []

    async def fn():
        calls.append(1)
        raise status_error(503)

    async def no_sleep(s):
        pass

    with pytest.raises(RequestFailed, match="after 4 attempts; last error: HTTP 503") as e:
        run(call_with_retries(fn, RetryPolicy(max_retries=3), sleep=no_sleep))
    assert len(calls) == 4 and e.value.attempts == 4 and e.value.exhausted and e.value.status_code == 503


def test_non_retryable_fails_at_once():
    calls = []

    async def fn():
        calls.append(1)
        raise status_error(400)

    with pytest.raises(RequestFailed) as e:
        run(call_with_retries(fn, RetryPolicy(max_retries=3)))
    assert len(calls) == 1 and not e.value.exhausted and e.value.status_code == 400


def test_policy_validation():
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="delays"):
        RetryPolicy(base_delay_s=-1)
