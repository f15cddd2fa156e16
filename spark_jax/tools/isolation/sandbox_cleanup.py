"""Host side: removing what a sandbox run could leave behind.

In strict mode a run leaves nothing by construction: its files live in tmpfs mounts of its own
mount namespace, its IPC objects in its own IPC namespace, its processes in its own PID
namespace, and all of them end with its PID 1, which dies with the host (PR_SET_PDEATHSIG).
What remains for the host to clean is the unsafe mode's: processes of the sandbox uid, files
and SysV IPC objects that uid left, and working directories on the host's /tmp, also those of a
host that was killed (``sweep_stale_workdirs``, run when the first unsafe worker starts).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import tempfile
import time

log = logging.getLogger(__name__)

WORKDIR_PREFIX = "spark-sbx-"
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")
SYSV_IPC_TABLES = ("/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem")


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
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)
    log.error("sandbox: processes of uid %d still alive after %d kill rounds", uid, rounds)
    return seen


def sweep_world_writable(uid: int) -> list[str]:
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

    for d in WORLD_WRITABLE_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            sweep(d, 0)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_workdirs(directory: str | None = None) -> list[str]:
    """Removes ``spark-sbx-<pid>-*`` working directories whose host process is gone."""
    directory = directory or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(WORKDIR_PREFIX):
            continue
        pid = name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            removed.append(os.path.join(directory, name))
    if removed:
        log.warning("sandbox: removed working directories left by dead hosts: %s", removed)
    return removed


def remove_ipc_of_uid(uid: int) -> list[str]:
    """Removes the SysV IPC objects owned by ``uid`` (unsafe mode without an IPC namespace and
    without seccomp is the only way a program can leave one). Returns what was removed."""
    libc = ctypes.CDLL(None, use_errno=True)
    remove = {"shm": lambda i: libc.shmctl(i, 0, None), "msg": lambda i: libc.msgctl(i, 0, None),
              "sem": lambda i: libc.semctl(i, 0, 0)}  # IPC_RMID
    removed = []
    for table in SYSV_IPC_TABLES:
        kind = os.path.basename(table)
        try:
            with open(table) as f:
                header = f.readline().split()
                rows = [line.split() for line in f]
        except OSError:
            continue
        id_col = next(i for i, name in enumerate(header) if name.endswith("id"))
        for row in rows:
            if len(row) > header.index("uid") and int(row[header.index("uid")]) == uid:
                if remove[kind](int(row[id_col])) == 0:
                    removed.append(f"{kind} {row[id_col]}")
    return removed


def sysv_ipc_objects() -> set[tuple[str, str]]:
    """(table, key and id) of every SysV IPC object visible here, as ``ipcs`` lists them."""
    objects = set()
    for table in SYSV_IPC_TABLES:
        try:
            with open(table) as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split()
                    if len(fields) >= 2:
                        objects.add((os.path.basename(table), f"{fields[0]}:{fields[1]}"))
        except OSError:
            continue
    return objects
