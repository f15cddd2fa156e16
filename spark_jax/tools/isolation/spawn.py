"""Starting tool worker processes: from one long-lived thread, from a non-dumpable host.

Workers ask the kernel to kill them when their parent dies (``PR_SET_PDEATHSIG``), so that no
worker outlives a host that was killed. The kernel's "parent" there is the thread that forked,
not the process: a worker forked from a short-lived thread (``asyncio.to_thread``, a thread
pool) would be killed when that thread ends. ``popen`` therefore forks from a single daemon
thread that lives as long as the host.

``harden_host`` makes the host non-dumpable before its first worker starts: its /proc files
(mem, environ, maps) then belong to root and ptrace needs CAP_SYS_PTRACE, even for a process of
the same uid that escaped its other confinement.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import subprocess
import threading

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
_requests: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_hardened = False


def harden_host() -> bool:
    """Marks this process non-dumpable (once); returns whether it is."""
    global _hardened
    with _lock:
        if not _hardened:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
                _hardened = True
            else:
                log.warning("could not mark the host non-dumpable: errno %d", ctypes.get_errno())
        return _hardened


def _serve() -> None:
    while True:
        args, kwargs, after, reply = _requests.get()
        try:
            proc = subprocess.Popen(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            reply.put((None, e))
            continue
        try:
            if after is not None:
                after(proc)
        except BaseException as e:  # noqa: BLE001 - the caller decides; the process is theirs
            reply.put((proc, e))
            continue
        reply.put((proc, None))


def popen(*args, after=None, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(*args, **kwargs)`` run on the spawner thread; ``after(proc)`` runs
    there too, right after the fork (e.g. to move the process into a cgroup)."""
    global _thread
    harden_host()
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_serve, name="spark-tool-spawner", daemon=True)
            _thread.start()
    reply: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
    _requests.put((args, kwargs, after, reply))
    proc, error = reply.get()
    if error is not None:
        if proc is not None:
            proc.kill()
            proc.wait()
        raise error
    return proc
