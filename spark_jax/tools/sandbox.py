"""The host side of the Python sandbox: spawns confined worker processes, feeds them code,
collects capped output within a wall-clock limit, and kills and cleans up everything after.

Each worker runs ``sandbox_child.py`` (see its docstring for the confinement layers) under a
fresh unprivileged uid when we are root, in its own session. A worker serves exactly one call
and is then destroyed: its process group is killed, every process still running under its uid
is killed, its working directory is removed, and (when no mount namespace hid them) files its
uid left in the world-writable directories are deleted. With ``prefork`` a pool keeps one
confined, idle worker ready per settings so a call skips interpreter start-up.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import math
import os
import pathlib
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from spark_jax.tools import sandbox_child

log = logging.getLogger(__name__)

_CHILD_SOURCE = pathlib.Path(sandbox_child.__file__).read_text()
_SETUP_TIMEOUT_S = 60.0  # interpreter start + preloads, before the call's own clock starts
_SETUP_CPU_S = 60  # CPU seconds the bootstrap may spend on preloads
WORKDIR_PREFIX = "spark-sbx-"
_LOGGED_LAYERS = False
_LOG_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class SandboxSettings:
    memory_mb: int = 1024
    disk_mb: int = 64
    max_processes: int = 16
    max_open_files: int = 64
    capture_bytes: int = 1_000_000
    preload: tuple[str, ...] = ()
    uid_range: tuple[int, int] = (2_000_000_000, 2_100_000_000)
    # Layers to leave off ("namespaces", "seccomp"), to test how the sandbox degrades.
    disable: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class SandboxOutcome:
    stdout: str
    stderr: str
    returncode: int | None  # None when the sandbox did not start
    timed_out: bool = False
    output_limited: bool = False
    setup_error: str | None = None
    layers: dict | None = None
    uid: int | None = None

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0
            and not self.timed_out
            and not self.output_limited
            and self.setup_error is None
        )

    def error_message(self, timeout_s: float) -> str | None:
        """What went wrong, in words a model can act on; None when ok."""
        if self.setup_error is not None:
            return f"sandbox failed to start: {self.setup_error}"
        if self.timed_out:
            return f"timed out after {timeout_s:g} s (the program was stopped)"
        if self.output_limited:
            return "the program printed too much output and was stopped"
        rc = self.returncode
        if rc == 0:
            return None
        if rc is not None and rc < 0:
            sig = -rc
            if sig == signal.SIGXCPU:
                return "CPU time limit exceeded (the program was stopped)"
            if sig == signal.SIGXFSZ:
                return "file size limit exceeded"
            if sig == signal.SIGSYS:
                return "the program made a forbidden system call and was stopped"
            if sig == signal.SIGKILL:
                return "the program was killed (CPU or memory limit)"
            return f"the program died from signal {signal.Signals(sig).name}"
        tail = self.stderr.strip().splitlines()
        last = tail[-1] if tail else ""
        return f"exit status {rc}" + (f": {last}" if last else "")


def _is_root() -> bool:
    return os.geteuid() == 0


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


def processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) pids whose real uid is ``uid``, read from /proc."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                zombie = False
                for line in f:
                    if line.startswith(b"State:"):
                        zombie = line.split()[1] in (b"Z", b"X")
                    elif line.startswith(b"Uid:"):
                        if int(line.split()[1]) == uid and not zombie:
                            pids.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def kill_uid(uid: int, rounds: int = 100) -> int:
    """SIGKILLs every process of ``uid`` until none is left; returns how many were seen."""
    seen = 0
    for _ in range(rounds):
        pids = processes_of_uid(uid)
        if not pids:
            return seen
        seen += len(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)
    log.error("sandbox: processes of uid %d still alive after %d kill rounds", uid, rounds)
    return seen


def _sweep_world_writable(uid: int) -> list[str]:
    """Deletes what ``uid`` created in /tmp, /var/tmp, /dev/shm, /run/lock and in any
    world-writable directory below them (the only places a fresh uid can create files)."""
    removed: list[str] = []

    def sweep(d: str, depth: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
                if st.st_uid == uid:
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(e.path, ignore_errors=True)
                    else:
                        os.unlink(e.path)
                    removed.append(e.path)
                elif e.is_dir(follow_symlinks=False) and st.st_mode & 0o002 and depth < 8:
                    sweep(e.path, depth + 1)
            except OSError:
                continue

    for d in sandbox_child.WORLD_WRITABLE_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            sweep(d, 0)
    return removed


def _python_installation() -> list[str]:
    """Directories the worker's interpreter must read: its prefixes (venv and base)."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    paths.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    return sorted(os.path.realpath(p) for p in paths)


def _scrubbed_env(workdir: str) -> dict[str, str]:
    """The complete environment of a worker: nothing inherited, so no secrets."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


class Worker:
    """One confined interpreter waiting for code; used for exactly one call."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        root = _is_root()
        # A uid nothing else uses, so that everything running or owned by it afterwards is
        # ours to kill and delete. Where the range is not mapped (rootless containers) we fall
        # back to "nobody", which others may share: then only the process group is killed.
        uid, self.exclusive_uid = 65534, False
        if root:
            lo, hi = settings.uid_range
            for _ in range(20):
                candidate = random.randrange(lo, hi)
                if _mapped_uid(candidate) and not processes_of_uid(candidate):
                    uid, self.exclusive_uid = candidate, True
                    break
        self.uid = uid if root else None
        self.workdir = tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
        if root:
            os.chown(self.workdir, uid, uid)
        os.chmod(self.workdir, 0o700)
        child_settings = {
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
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHILD_SOURCE, json.dumps(child_settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_scrubbed_env(self.workdir),
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
        self.created = time.monotonic()
        self._out = bytearray()
        self._err = bytearray()
        self.layers: dict | None = None
        self._destroyed = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _pump(self, sel: selectors.BaseSelector, deadline: float, until_ready: bool) -> str:
        """Reads both pipes until EOF, the deadline, the capture cap, or (until_ready) the
        READY line. Returns "eof", "timeout", "limit" or "ready"."""
        cap = self.settings.capture_bytes
        while sel.get_map():
            if until_ready and b"\n" in self._out:
                return "ready"
            remaining = deadline - time.monotonic()
            events = sel.select(timeout=max(0.0, min(remaining, 0.5)))
            for key, _ in events:
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
                return "ready" if until_ready and b"\n" in self._out else "timeout"
        if until_ready and b"\n" in self._out:
            return "ready"
        return "eof"

    def run(self, code: str, timeout_s: float) -> SandboxOutcome:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ, "out")
        sel.register(self.proc.stderr, selectors.EVENT_READ, "err")
        try:
            state = self._pump(sel, self.created + _SETUP_TIMEOUT_S, until_ready=True)
            first, _, rest = bytes(self._out).partition(b"\n")
            line = first.decode("utf-8", errors="replace")
            if state != "ready" or not line.startswith(sandbox_child.READY):
                self.destroy()
                reason = line[len(sandbox_child.FAILED):] if line.startswith(sandbox_child.FAILED) else (
                    f"worker exited during setup ({state}); stderr: "
                    + self._err.decode("utf-8", errors="replace")[-500:]
                )
                return SandboxOutcome("", "", None, setup_error=reason, uid=self.uid)
            self.layers = json.loads(line[len(sandbox_child.READY):])
            _log_layers_once(self.layers)
            self._out = bytearray(rest)

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
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("sandbox worker %d did not exit after SIGKILL", self.proc.pid)
        if self.uid is not None and self.exclusive_uid:  # anything that left the process group
            kill_uid(self.uid)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        mounts = (self.layers or {}).get("mounts")
        if self.uid is not None and self.exclusive_uid and not isinstance(mounts, list):
            removed = _sweep_world_writable(self.uid)
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
        log.warning("python sandbox runs with reduced isolation: %s", off)


class SandboxPool:
    """Hands out one fresh worker per call, keeping (with prefork) one warm worker ready."""

    def __init__(self, settings: SandboxSettings, prefork: bool) -> None:
        self.settings = settings
        self.prefork = prefork
        self._idle: Worker | None = None
        self._lock = threading.Lock()

    def take(self) -> Worker:
        with self._lock:
            worker, self._idle = self._idle, None
            if worker is None or not worker.alive():
                if worker is not None:
                    worker.destroy()
                worker = Worker(self.settings)
            if self.prefork:
                self._idle = Worker(self.settings)
        return worker

    def close(self) -> None:
        with self._lock:
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
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = SandboxPool(settings, prefork)
    return pool.take().run(code, timeout_s)


def close_pools() -> None:
    """Destroys every idle warm worker (also runs at interpreter exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


atexit.register(close_pools)


def sandbox_layers(settings: SandboxSettings | None = None) -> dict:
    """The confinement layers active on this machine (runs one trivial program)."""
    outcome = run_python("pass", 10.0, settings or SandboxSettings(), prefork=False)
    if outcome.setup_error:
        return {"error": outcome.setup_error}
    return dict(outcome.layers or {})
