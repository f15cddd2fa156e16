import threading
import time

import pytest

from spark_jax.core.periodic import every


def _wait_for(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def test_writes_while_the_block_runs_and_never_after_it():
    calls = []
    with every(0.01, lambda: calls.append(threading.current_thread().name), name="tick-test"):
        assert _wait_for(lambda: len(calls) >= 3)
    done = len(calls)
    time.sleep(0.05)
    assert len(calls) == done  # the thread was joined on leaving
    assert set(calls) == {"tick-test"}
    assert "tick-test" not in {t.name for t in threading.enumerate()}


def test_an_os_error_does_not_stop_the_writes_or_the_block():
    calls = []

    def write():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")

    with every(0.01, write, name="tick-test"):
        assert _wait_for(lambda: len(calls) >= 2)


def test_the_block_s_own_exception_passes_through_and_stops_the_thread():
    with pytest.raises(KeyError):
        with every(0.01, lambda: None, name="tick-raise"):
            raise KeyError("x")
    assert "tick-raise" not in {t.name for t in threading.enumerate()}


@pytest.mark.parametrize("period_s", [0, -1.0])
def test_a_period_that_is_not_positive_is_refused(period_s):
    with pytest.raises(ValueError, match="period_s must be > 0 seconds"):
        with every(period_s, lambda: None, name="tick-bad"):
            pass
