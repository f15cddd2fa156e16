"""The host side of the Python sandbox: spawns confined worker processes, feeds them code,
collects capped output within a wall-clock limit, and kills everything after.

Each worker runs child.sandbox_main (see its docstring for the confinement steps) and serves exactly
one call. In strict mode (the default) the program runs as PID 1 of its own PID namespace, in
its own mount, network and IPC namespaces, under a fresh uid (root) or the unmapped uid of a
user namespace (not root); killing that PID 1 ends every process, IPC object and file the call
made, and the host kills it after every call (and the kernel does when the host dies). Without
those namespaces strict mode refuses to run; ``mode="unsafe"`` (chosen by name) runs with what
the host allows and cleans up by uid and by sweeping directories instead. With ``prefork`` a
pool keeps one confined, idle worker ready per settings so a call skips interpreter start-up.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import pathlib
import random
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from spark_jax.tools.isolation import sandbox_cgroup, sandbox_cleanup, seccomp, spawn
from spark_jax.tools.isolation.child.confine import PID_LINE
from spark_jax.tools.isolation.child.sandbox_main import FAILED, READY
from spark_jax.tools.isolation.sandbox_cleanup import WORKDIR_PREFIX, kill_uid, processes_of_uid
from spark_jax.tools.isolation.sandbox_types import SandboxOutcome, SandboxSettings

log = logging.getLogger(__name__)

_SETUP_TIMEOUT_S = 60.0  # interpreter start + preloads, before the call's own clock starts
_SETUP_CPU_S = 60  # CPU seconds the bootstrap may spend on preloads
_CGROUP_SLACK_MB = 128  # interpreter and page tables on top of RLIMIT_AS and the workdir
_CHILD_PACKAGE = "spark_jax.tools.isolation.child"
_CHILD_MODULES = ("confine", "sandbox_mounts", "sandbox_main")  # in import order
# Runs the child modules under their real names, with empty stand-ins for the packages above
# them: the sandbox never imports the host's spark_jax (whose files its root does not contain).
_LOADER = f"""
import json, sys, types
_package = {_CHILD_PACKAGE!r}
_parts = _package.split(".")
for _i in range(1, len(_parts) + 1):
    _name = ".".join(_parts[:_i])
    sys.modules[_name] = types.ModuleType(_name)
    sys.modules[_name].__path__ = []
for _name, _source in json.loads(sys.argv[2]):
    sys.modules[_name] = types.ModuleType(_name)
    sys.modules[_name].__file__ = "<sandbox>"
    exec(compile(_source, "<sandbox>", "exec"), sys.modules[_name].__dict__)
sys.modules[_package + ".sandbox_main"].entry()
"""
_SOURCES = json.dumps([
    [f"{_CHILD_PACKAGE}.{name}", (pathlib.Path(__file__).parent / "child" / f"{name}.py").read_text()]
    for name in _CHILD_MODULES
])
_LOGGED_LAYERS = False
_LOG_LOCK = threading.Lock()


def _mapped_uid(uid: int) -> bool:
    """Whether ``uid`` exists in this user namespace (containers may map only some uids)."""
    try:
        for line in pathlib.Path("/proc/self/uid_map").read_text().splitlines():
            inside, _outside, count = (int(x) for x in line.split())
            if inside <= uid < inside + count:
                return True
        return False
    except (OSError, ValueError):
        return True


def _python_installation() -> list[str]:
    """Directories the worker's interpreter must read: its prefixes (venv and base)."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(os.path.realpath(p) for p in paths)


def _scrubbed_env() -> dict[str, str]:
    """The complete environment of a worker: nothing inherited, so no secrets. The child sets
    HOME and TMPDIR to its working directory once it knows where that is."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


def _fresh_uid(settings: SandboxSettings) -> int | None:
    """As root: a uid nothing else uses, so everything it owns afterwards is ours to kill."""
    if os.geteuid() != 0:
        return None
    lo, hi = settings.uid_range
    for _ in range(20):
        candidate = random.randrange(lo, hi)
        if _mapped_uid(candidate) and not processes_of_uid(candidate):
            return candidate
    return None


class Worker:
    """One confined interpreter waiting for code; used for exactly one call."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        root = os.geteuid() == 0
        fresh = _fresh_uid(settings)
        # Where the range is not mapped (rootless containers) root falls back to "nobody",
        # which others may share: then only our own processes are killed.
        uid = fresh if fresh is not None else 65534
        self.exclusive_uid = fresh is not None
        self.uid = uid if root else None
        self.workdir = None  # strict mode: the program's directory exists only in its namespace
        if settings.mode == "unsafe":  # a fallback on the host, used if no mount namespace
            self.workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
            if root:
                os.chown(self.workdir, uid, uid)
            os.chmod(self.workdir, 0o700)
        program, reason = seccomp.filter_or_reason(signals=True)
        quiet, _ = seccomp.filter_or_reason(signals=False)
        child_settings = {
            "host_pid": os.getpid(),
            "mode": settings.mode,
            "workdir": self.workdir,
            "uid": uid,
            "gid": uid,
            "memory_mb": settings.memory_mb,
            "disk_mb": settings.disk_mb,
            "max_processes": settings.max_processes,
            "max_open_files": settings.max_open_files,
            "setup_cpu_s": _SETUP_CPU_S,
            "preload": list(settings.preload),
            "expose": _python_installation(),
            "disable": list(settings.disable),
            "seccomp": program.hex(),
            "seccomp_no_signals": quiet.hex(),
            "seccomp_error": reason,
        }
        self.cgroup = self.pids_cgroup = None
        child_settings["pids_cgroup"] = self._make_cgroups(settings)
        # The host moves the worker into these right after the fork; the worker waits until it
        # is in them before it forks itself, or its children would stay outside the limits.
        child_settings["cgroups"] = [os.path.basename(c.path) for c in (self.cgroup, self.pids_cgroup) if c]
        self.inner_pid: int | None = None
        self._pidfd: int | None = None
        self._out = bytearray()
        self._err = bytearray()
        self.layers: dict | None = None
        self._destroyed = False
        cgroups = [c for c in (self.cgroup, self.pids_cgroup) if c is not None]
        try:
            self.proc = spawn.popen(
                [sys.executable, "-I", "-c", _LOADER, json.dumps(child_settings), _SOURCES],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_scrubbed_env(),
                cwd="/",
                close_fds=True,
                start_new_session=True,
                after=(lambda p: [c.add(p.pid) for c in cgroups]) if cgroups else None,
            )
        except BaseException:
            for c in cgroups:
                c.destroy()
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.created = time.monotonic()

    def _make_cgroups(self, settings: SandboxSettings) -> str | None:
        """The worker's memory cgroup (v2, where delegated) and its task limit (pids.max, v1 or
        v2, where the controller is ours): the program's tasks plus the supervisor. Returns the
        task limit in words for the READY report, or None where there is none."""
        tasks = settings.max_processes + 1
        memory, _why = sandbox_cgroup.memory_parent()
        pids, kind = sandbox_cgroup.pids_parent()
        if "tasks" in settings.disable:
            pids, kind = None, "disabled by settings"
        if memory is not None:
            limit = (settings.memory_mb + settings.disk_mb + _CGROUP_SLACK_MB) * 1024 * 1024
            try:
                self.cgroup = sandbox_cgroup.MemoryCgroup(memory, limit)
                if kind == "v2":  # one v2 cgroup per process: the limit goes into the same one
                    self.cgroup.limit_tasks(tasks)
                    return f"pids cgroup v2 (pids.max {tasks})"
            except OSError as e:
                log.warning("sandbox: no memory cgroup or task limit in it for this worker: %s", e)
                if self.cgroup is not None and kind == "v2":
                    self.cgroup.destroy()
                    self.cgroup = None
        if pids is None:
            return None
        try:
            self.pids_cgroup = sandbox_cgroup.PidsCgroup(pids, tasks)
        except OSError as e:
            log.warning("sandbox: no pids cgroup for this worker: %s", e)
            return None
        return f"pids cgroup {kind} (pids.max {tasks})"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """Whether setup is over (READY or FAILED has arrived), without waiting for it."""
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return True  # exited: nothing to wait for
            self._out += chunk
        return READY.encode() in self._out or FAILED.encode() in self._out

    def _setup_line(self) -> str | None:
        """The READY or FAILED line once it has arrived, after taking the PID line before it."""
        while b"\n" in self._out:
            first, _, rest = bytes(self._out).partition(b"\n")
            line = first.decode("utf-8", errors="replace")
            if line.startswith(PID_LINE) and self.inner_pid is None:
                self.inner_pid = int(line[len(PID_LINE):])
                try:
                    self._pidfd = os.pidfd_open(self.inner_pid)
                except OSError:  # already gone; nothing left to kill there
                    pass
                self._out = bytearray(rest)
                continue
            self._out = bytearray(rest)
            return line
        return None

    def _pump(self, sel: selectors.BaseSelector, deadline: float, until_ready: bool):
        """Reads both pipes until EOF, the deadline, the capture cap, or (until_ready) the
        setup line. Returns "eof", "timeout" or "limit", or the setup line itself."""
        cap = self.settings.capture_bytes
        while sel.get_map():
            if until_ready and (line := self._setup_line()) is not None:
                return line
            remaining = deadline - time.monotonic()
            for key, _ in sel.select(timeout=max(0.0, min(remaining, 0.5))):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = self._out if key.data == "out" else self._err
                buf += chunk
                if not until_ready and len(self._out) + len(self._err) > cap:
                    return "limit"
            if remaining <= 0:
                # Past the deadline the pipes are still read once: a warm worker that has been
                # idle longer than the setup allowance has its READY line waiting there.
                line = self._setup_line() if until_ready else None
                return line if line is not None else "timeout"
        line = self._setup_line() if until_ready else None
        return line if line is not None else "eof"

    def run(self, code: str, timeout_s: float) -> SandboxOutcome:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ, "out")
        sel.register(self.proc.stderr, selectors.EVENT_READ, "err")
        try:
            line = self._pump(sel, self.created + _SETUP_TIMEOUT_S, until_ready=True)
            if not line.startswith(READY):
                self.destroy()
                reason = line[len(FAILED):] if line.startswith(FAILED) else (
                    f"worker exited during setup ({line}); stderr: "
                    + self._err.decode("utf-8", errors="replace")[-500:]
                )
                return SandboxOutcome("", "", None, setup_error=reason, uid=self.uid)
            self.layers = json.loads(line[len(READY):])
            _log_layers_once(self.layers)

            cpu_s = max(1, math.ceil(timeout_s))
            writer = threading.Thread(target=self._write_code, args=(f"{cpu_s}\n{code}",), daemon=True)
            writer.start()
            deadline = time.monotonic() + timeout_s
            state = self._pump(sel, deadline, until_ready=False)
            if state == "eof":  # pipes closed; the process may still be running
                try:
                    self.proc.wait(timeout=max(0.05, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    state = "timeout"
            returncode = self.proc.poll()
        finally:
            sel.close()
            self.destroy()
        cap = self.settings.capture_bytes
        return SandboxOutcome(
            stdout=bytes(self._out[:cap]).decode("utf-8", errors="replace"),
            stderr=bytes(self._err[:cap]).decode("utf-8", errors="replace"),
            returncode=returncode,
            timed_out=state == "timeout",
            output_limited=state == "limit",
            layers=self.layers,
            uid=self.uid,
        )

    def _write_code(self, code: str) -> None:
        try:
            self.proc.stdin.write(code.encode("utf-8", errors="replace"))
            self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def destroy(self) -> None:
        """Kills the worker and everything it started, removes its files. Idempotent."""
        if self._destroyed:
            return
        self._destroyed = True
        if self._pidfd is not None:  # PID 1 of the sandbox: its namespace dies with it
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                # Readable once PID 1 has exited, which it does after the rest of its namespace.
                select.select([self._pidfd], [], [], 5.0)
            except OSError:
                pass
            os.close(self._pidfd)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("sandbox worker %d did not exit after SIGKILL", self.proc.pid)
        for cgroup in (self.cgroup, self.pids_cgroup):
            if cgroup is not None:
                cgroup.destroy()
        layers = self.layers or {}
        if self.uid is not None and self.exclusive_uid:  # unsafe mode: clean up by uid
            if layers.get("pidns") != "on":
                kill_uid(self.uid)  # anything that left the process group
            if layers.get("ipcns") != "on" and layers.get("seccomp") != "on":
                removed = sandbox_cleanup.remove_ipc_of_uid(self.uid)
                if removed:
                    log.warning("sandbox: removed IPC objects the program left: %s", removed)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            mounted = isinstance((self.layers or {}).get("mounts"), list)
            if self.uid is not None and self.exclusive_uid and not mounted:
                removed = sandbox_cleanup.sweep_world_writable(self.uid)
                if removed:
                    log.warning("sandbox: removed files the program left outside its directory: %s", removed)


def _log_layers_once(layers: dict) -> None:
    global _LOGGED_LAYERS
    with _LOG_LOCK:
        if _LOGGED_LAYERS:
            return
        _LOGGED_LAYERS = True
    off = {k: v for k, v in layers.items() if isinstance(v, str) and v.startswith("off")}
    log.info("python sandbox layers: %s", layers)
    if off:
        log.warning("python sandbox runs with reduced isolation (unsafe mode): %s", off)


class SandboxPool:
    """Hands out one fresh worker per call, keeping (with prefork) one warm worker ready.

    The warm worker for the next call starts on a thread of its own (``refill``): once a call
    that found its worker ready is over, so that the start (the fork, and the move into its
    cgroups, which waits for an RCU grace period of the kernel, about 10 ms, and holds up forks
    and exits meanwhile) does not slow that call; at once when the call's own worker is still
    starting (calls back to back), since the call waits for that anyway. A call that comes while
    the next worker is starting waits for it rather than starting a second one."""

    def __init__(self, settings: SandboxSettings, prefork: bool) -> None:
        self.settings = settings
        self.prefork = prefork
        self._idle: Worker | None = None
        self._refilling = False
        self._closed = False
        self._cond = threading.Condition()

    def take(self) -> Worker:
        """A worker for one call; OSError (fork's EAGAIN, ENOMEM, ...) when none can start."""
        with self._cond:
            while self._refilling:
                self._cond.wait()
            worker, self._idle = self._idle, None
        if worker is None or not worker.alive():
            if worker is not None:
                worker.destroy()
            worker = Worker(self.settings)
        return worker

    def refill(self) -> None:
        """Starts the next call's warm worker (with prefork), on a thread of its own."""
        with self._cond:
            if not self.prefork or self._refilling or self._idle is not None or self._closed:
                return
            self._refilling = True
        try:
            threading.Thread(target=self._refill, name="spark-sandbox-prefork", daemon=True).start()
        except RuntimeError as e:  # no thread to be had: the next call starts its own worker
            log.warning("sandbox: could not start a warm worker: %s", e)
            self._refilled(None)

    def _refill(self) -> None:
        try:
            worker = Worker(self.settings)
        except Exception as e:  # noqa: BLE001 - EAGAIN and the like: the next call tries again
            log.warning("sandbox: could not start a warm worker: %s", e)
            worker = None
        self._refilled(worker)

    def _refilled(self, worker: Worker | None) -> None:
        with self._cond:
            self._refilling = False
            if worker is not None and self._idle is None and not self._closed:
                self._idle, worker = worker, None
            self._cond.notify_all()
        if worker is not None:
            worker.destroy()

    def close(self) -> None:
        with self._cond:
            self._closed = True  # a start still under way destroys its worker when it ends
            self._cond.wait_for(lambda: not self._refilling, timeout=_SETUP_TIMEOUT_S)
            worker, self._idle = self._idle, None
        if worker is not None:
            worker.destroy()


_POOLS: dict[tuple, SandboxPool] = {}
_POOLS_LOCK = threading.Lock()


def run_python(
    code: str, timeout_s: float, settings: SandboxSettings, *, prefork: bool = True
) -> SandboxOutcome:
    """Runs ``code`` in a fresh confined worker with a wall-clock limit of ``timeout_s``."""
    key = (settings, prefork)
    with _POOLS_LOCK:
        if settings.mode == "unsafe" and not any(k[0].mode == "unsafe" for k in _POOLS):
            sandbox_cleanup.sweep_stale_workdirs()  # left by an unsafe-mode host that was killed
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = SandboxPool(settings, prefork)
    try:
        worker = pool.take()
    except OSError as e:  # the host is short of processes, memory or descriptors
        pool.refill()
        return SandboxOutcome("", "", None, setup_error=f"could not start a worker: {e}; try again")
    if not worker.ready():  # the call waits for its worker's start anyway: start the next now
        pool.refill()
    try:
        return worker.run(code, timeout_s)
    finally:
        pool.refill()  # after a warm worker's call, so that the two starts do not overlap it


def close_pools() -> None:
    """Destroys every idle warm worker (also runs at interpreter exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


def sandbox_layers(settings: SandboxSettings | None = None) -> dict:
    """The sandbox's mode and confinement layers on this machine (runs one trivial program)."""
    outcome = run_python("pass", 10.0, settings or SandboxSettings(), prefork=False)
    if outcome.setup_error:
        return {"mode": "unavailable", "error": outcome.error_message(10.0)}
    layers = dict(outcome.layers or {})
    parent, why = sandbox_cgroup.memory_parent()
    layers["memory_cgroup"] = "on" if parent else f"off: {why} (seccomp keeps memfd and shm out)"
    pids, kind = sandbox_cgroup.pids_parent()
    layers["pids_cgroup"] = f"on ({kind})" if pids else f"off: {kind}"
    return layers
