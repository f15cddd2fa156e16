"""run_tool never raises on host pressure: a worker that cannot start (fork's EAGAIN, injected
here; test_sandbox_rootless.py has the real one), a broken pipe to a worker, or a replacement
that cannot start each give ok=False with the reason, and the next call works again."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from spark_jax.tools import ToolsConfig, run_tool
from spark_jax.tools.isolation.sandbox import close_pools
from spark_jax.tools.isolation.tool_worker import _POOL
from tests.tools.isolation.worker_tools import RunawayTool


def _eagain(*args, **kwargs):
    raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))


@pytest.mark.parametrize(
    "tool, argument, expected",
    [("units", "1 km to m", "1000 m"), ("python", "print(6 * 7)", "42"), ("sympy", "x + x", "2*x")],
)
def test_no_worker_can_start(tool, argument, expected, monkeypatch):
    _POOL.close()
    close_pools()
    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen", _eagain)
        r = run_tool(tool, argument)
    assert not r.ok and "could not start" in r.error and "Resource temporarily unavailable" in r.error, r
    r = run_tool(tool, argument)
    assert r.ok and r.output.startswith(expected), r


def test_a_broken_pipe_to_a_worker():
    assert run_tool("calculator", "1 + 1").ok  # leaves a warm, idle worker
    worker = _POOL._idle[-1]
    worker.proc.stdin.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the next request's write fails with EPIPE
    worker.proc.stdin = os.fdopen(write_end, "wb")
    r = run_tool("calculator", "2 + 2")
    assert not r.ok and "Broken pipe" in r.error, r
    assert not worker.alive()
    assert run_tool("calculator", "3 + 3").output == "6"


def test_a_replacement_that_cannot_start(monkeypatch):
    assert run_tool("calculator", "1 + 1").ok
    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen", _eagain)
        r = RunawayTool(ToolsConfig()).run("30000000", 0.5)  # killed; its replacement fails
    assert not r.ok and "timed out" in r.error
    assert run_tool("finance", "fv(0.05, 10, 1000)").ok


def test_a_warm_sandbox_worker_that_cannot_start(monkeypatch):
    """With prefork, the call's own worker starts but the warm one for the next call cannot:
    the call still answers, and the next call starts its own."""
    close_pools()
    from spark_jax.tools.isolation import sandbox

    real = sandbox.Worker
    started = []

    def second_fails(settings):
        if started:
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        started.append(1)
        return real(settings)

    with monkeypatch.context() as m:
        m.setattr(sandbox, "Worker", second_fails)
        r = run_tool("python", "print(1)")
        (pool,) = sandbox._POOLS.values()
        with pool._cond:  # the warm worker's start runs after the call, on its own thread
            while pool._refilling:
                pool._cond.wait()
            assert pool._idle is None
    assert r.ok and r.output == "1", r
    assert run_tool("python", "print(2)").output == "2"
    close_pools()
