"""Host-side tools in warm worker processes, so that any call can be stopped on time.

Calculator, units, finance, chemistry, constants and search parse model input in pure Python
and C: an input that makes them compute a huge integer holds the GIL for hours, and no thread
of the host can interrupt it. Input checks cannot close that class (the parsers rewrite their
input after any check), so the tools run in worker processes (tool_worker_main) and a call that
passes its timeout ends with ``ok=False`` and the worker's SIGKILL. The host thread that waits
blocks in select(), so the rest of the host keeps running meanwhile.

A pool keeps up to ``ToolsConfig.host_tool_workers`` workers, each serving one call at a time
and reused across calls (the tools keep no state between calls); a killed worker is replaced at
once, warming in the background. Waiting for a free worker counts towards the call's timeout;
a fresh worker's start-up (imports, ~1-2 s) does not.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import pathlib
import selectors
import subprocess
import sys
import threading
import time

from spark_jax.tools.config import ToolsConfig
from spark_jax.tools.isolation import seccomp, spawn
from spark_jax.tools.result import ToolResult

log = logging.getLogger(__name__)

SETUP_TIMEOUT_S = 60.0  # imports and warm-up of a fresh worker, before a call's clock starts
WARM = (  # what every worker loads before its first call
    "spark_jax.tools.calculator:Calculator", "spark_jax.tools.units:UnitsTool",
    "spark_jax.tools.finance:FinanceTool", "spark_jax.tools.chemistry:ChemistryTool",
    "spark_jax.tools.constants:ConstantsTool", "spark_jax.tools.search:SearchTool",
)
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from spark_jax.tools.isolation.tool_worker_main import main; main()")
# The directory holding spark_jax/ (this file is spark_jax/tools/isolation/tool_worker.py).
_PACKAGE_ROOT = str(pathlib.Path(os.path.abspath(__file__)).parents[3])
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class WorkerDied(RuntimeError):
    pass


def config_payload(config: ToolsConfig) -> dict:
    """The configuration as the worker rebuilds it: the search corpus resolved here (the
    worker's environment is scrubbed) and made absolute (its working directory is /)."""
    d = dataclasses.asdict(config)
    corpus = config.resolved_search_corpus()
    if corpus and corpus != "demo":
        corpus = os.path.abspath(os.path.expanduser(corpus))
    d["search_corpus"] = corpus
    return d


class ToolWorker:
    """One worker process; ``call`` serves one request."""

    def __init__(self, memory_mb: int, config: ToolsConfig) -> None:
        program, _reason = seccomp.filter_or_reason(signals=False)
        settings = {"host_pid": os.getpid(), "memory_mb": memory_mb, "seccomp": program.hex(),
                    "warm": list(WARM), "config": config_payload(config)}
        self.proc = spawn.popen(
            [sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=_ENV, cwd="/", close_fds=True, start_new_session=True,
        )
        self.created = time.monotonic()
        self.ready = False
        self._buf = bytearray()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _line(self, deadline: float) -> bytes | None:
        """The next line from the worker, or None at the deadline; WorkerDied at EOF."""
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._sel.select(timeout=remaining):
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    self.kill()
                    raise WorkerDied(f"the tool worker exited (status {self.proc.returncode})")
                self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return line

    def call(self, request: dict, timeout_s: float) -> dict | None:
        """The worker's reply, or None when ``timeout_s`` passed (the worker is then killed)."""
        if not self.ready:
            line = self._line(self.created + SETUP_TIMEOUT_S)
            if line != b"READY":
                self.kill()
                raise WorkerDied(f"the tool worker did not start within {SETUP_TIMEOUT_S:g} s")
            self.ready = True
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            self.kill()
            raise WorkerDied(f"the tool worker is gone ({e})") from None
        line = self._line(time.monotonic() + timeout_s)
        if line is None:
            self.kill()
            return None
        return json.loads(line)

    def kill(self) -> None:
        """Kills and reaps the worker (idempotent)."""
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self._sel.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


class ToolWorkerPool:
    def __init__(self) -> None:
        self._idle: list[ToolWorker] = []
        self._count = 0
        self._cond = threading.Condition()

    def _acquire(self, config: ToolsConfig, deadline: float) -> ToolWorker | None:
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._count -= 1
                if self._count < config.host_tool_workers:
                    self._count += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    return None
        try:
            return ToolWorker(config.host_tool_memory_mb, config)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: ToolWorker, config: ToolsConfig) -> None:
        if not worker.alive():  # killed: start its replacement now, so it warms meanwhile
            try:
                worker = ToolWorker(config.host_tool_memory_mb, config)
            except Exception as e:  # noqa: BLE001 - EAGAIN and the like: the next call retries
                log.warning("could not replace a tool worker: %s", e)
                with self._cond:
                    self._count -= 1
                    self._cond.notify()
                return
        with self._cond:
            self._idle.append(worker)
            self._cond.notify()

    def call(self, spec: str, config: ToolsConfig, argument: str, timeout_s: float) -> ToolResult:
        name = spec.rpartition(":")[2]
        try:
            worker = self._acquire(config, time.monotonic() + timeout_s)
        except OSError as e:  # fork's EAGAIN or ENOMEM: the host is short of processes or memory
            return ToolResult(False, "", f"could not start a tool worker: {e}; try again", 0.0)
        if worker is None:
            return ToolResult(False, "", f"timed out after {timeout_s:g} s waiting for a free tool worker", 0.0)
        request = {"tool": spec, "config": config_payload(config), "argument": argument, "timeout_s": timeout_s}
        try:
            reply = worker.call(request, timeout_s)
        except WorkerDied as e:
            return ToolResult(False, "", f"{e}; the call was not completed", 0.0)
        except (OSError, ValueError) as e:  # a broken pipe or reply: the worker cannot be trusted
            worker.kill()
            return ToolResult(False, "", f"the tool worker failed ({type(e).__name__}: {e}); "
                              "the call was not completed", 0.0)
        finally:
            self._release(worker, config)
        if reply is None:
            return ToolResult(False, "", f"timed out after {timeout_s:g} s (the {name} call was stopped)", 0.0)
        return ToolResult(bool(reply["ok"]), str(reply["output"]), reply["error"], 0.0)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()


_POOL = ToolWorkerPool()
atexit.register(_POOL.close)


def run_in_worker(tool, argument: str, timeout_s: float) -> ToolResult:
    """Runs ``tool`` (a Tool whose class the worker can import) on ``argument`` in a worker."""
    spec = f"{type(tool).__module__}:{type(tool).__qualname__}"
    return _POOL.call(spec, tool.config, argument, timeout_s)

