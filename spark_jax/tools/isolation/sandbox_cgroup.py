"""Host side: a cgroup v2 ``memory.max`` per sandbox worker, where this host delegates one, and
a ``pids.max`` per worker wherever the pids controller is ours to use (cgroup v1 or v2).

The limit counts what ``RLIMIT_AS`` does not: tmpfs and shared-memory pages, page cache and
kernel memory charged to the worker. It needs the memory controller enabled for children of
our own cgroup (``cgroup.subtree_control``), which systemd's ``Delegate=yes`` or a container's
private cgroup namespace allow. Where it is not, ``memory_parent`` says why and the seccomp
allow list does the accounting's job: it refuses memfd_create and every SysV/POSIX shared
memory call, and the sandbox's root has no /dev/shm, so no memory escapes RLIMIT_AS but the
size-limited working directory.
"""

from __future__ import annotations

import functools
import logging
import os
import time

log = logging.getLogger(__name__)

PREFIX = "spark-sbx-"


def _cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split()[:1] == ["cgroup2"]:
                    return left.split()[4]
    except OSError:
        pass
    return None


def _own_cgroup(cgroup_file: str = "/proc/self/cgroup", controller: str = "") -> str | None:
    """Our cgroup in the v2 hierarchy (``controller`` empty) or in the v1 hierarchy that has
    ``controller``."""
    try:
        with open(cgroup_file) as f:
            for line in f:
                _id, names, path = line.rstrip("\n").split(":", 2)
                if (names == "" and not controller) or (controller and controller in names.split(",")):
                    return path
    except (OSError, ValueError):
        pass
    return None


def _cgroup1_mount(controller: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup v1 hierarchy with ``controller`` is mounted, if anywhere."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = right.split()
                if fields[:1] == ["cgroup"] and controller in fields[-1].split(","):
                    return left.split()[4]
    except OSError:
        pass
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def find_memory_parent(mount: str | None, own: str | None) -> tuple[str | None, str]:
    """(directory under which workers' cgroups go, "ok"), or (None, why there is none)."""
    if mount is None or own is None:
        return None, "no cgroup v2 hierarchy mounted"
    parent = os.path.join(mount, own.lstrip("/"))
    try:
        controllers = _read(os.path.join(parent, "cgroup.controllers")).split()
    except OSError as e:
        return None, f"cannot read {parent}/cgroup.controllers: {e.strerror}"
    if "memory" not in controllers:
        shown = " ".join(controllers) or "none"
        return None, f"no memory controller in cgroup v2 at {parent} (controllers: {shown})"
    control = os.path.join(parent, "cgroup.subtree_control")
    try:
        if "memory" not in _read(control).split():
            _write(control, "+memory")
        probe = os.path.join(parent, f"{PREFIX}probe-{os.getpid()}")
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        return None, f"cgroup {parent} does not delegate the memory controller to us: {e.strerror}"
    return parent, "ok"


@functools.lru_cache(maxsize=1)
def memory_parent() -> tuple[str | None, str]:
    parent, reason = find_memory_parent(_cgroup2_mount(), _own_cgroup())
    if parent is not None:
        sweep_stale(parent)
    return parent, reason


def _probe(parent: str) -> None:
    probe = os.path.join(parent, f"{PREFIX}probe-{os.getpid()}")
    os.mkdir(probe)
    os.rmdir(probe)


def find_pids_parent(v2_mount, v2_own, v1_mount, v1_own) -> tuple[str | None, str]:
    """(directory for the workers' pids cgroups, "v1"/"v2"), or (None, why there is none).
    Version 2 first: a process can be in one v2 cgroup only, shared with the memory limit."""
    reasons = []
    if v2_mount is not None and v2_own is not None:
        parent = os.path.join(v2_mount, v2_own.lstrip("/"))
        try:
            if "pids" not in _read(os.path.join(parent, "cgroup.controllers")).split():
                raise OSError(0, "no pids controller")
            control = os.path.join(parent, "cgroup.subtree_control")
            if "pids" not in _read(control).split():
                _write(control, "+pids")
            _probe(parent)
            return parent, "v2"
        except OSError as e:
            reasons.append(f"cgroup v2 at {parent}: {e.strerror or e}")
    else:
        reasons.append("no cgroup v2 hierarchy")
    if v1_mount is not None and v1_own is not None:
        parent = os.path.join(v1_mount, v1_own.lstrip("/"))
        try:
            _probe(parent)
            return parent, "v1"
        except OSError as e:
            reasons.append(f"cgroup v1 pids at {parent}: {e.strerror}")
    else:
        reasons.append("no cgroup v1 pids hierarchy")
    return None, "; ".join(reasons)


@functools.lru_cache(maxsize=1)
def pids_parent() -> tuple[str | None, str]:
    parent, kind = find_pids_parent(_cgroup2_mount(), _own_cgroup(), _cgroup1_mount("pids"),
                                    _own_cgroup(controller="pids"))
    if parent is not None:
        sweep_stale(parent)
    return parent, kind


class MemoryCgroup:
    """One worker's cgroup: created with its limit, joined by the worker, killed and removed."""

    def __init__(self, parent: str, limit_bytes: int) -> None:
        self.path = os.path.join(parent, f"{PREFIX}{os.getpid()}-{time.monotonic_ns()}")
        os.mkdir(self.path)
        try:
            _write(os.path.join(self.path, "memory.max"), str(limit_bytes))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if os.path.exists(os.path.join(self.path, name)):
                    _write(os.path.join(self.path, name), value)
        except OSError:
            self.destroy()
            raise

    def add(self, pid: int) -> None:
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))

    def limit_tasks(self, count: int) -> None:
        """pids.max, in this same cgroup (cgroup v2 with the pids controller delegated)."""
        _write(os.path.join(self.path, "pids.max"), str(count))


class PidsCgroup(MemoryCgroup):
    """One worker's cgroup with only ``pids.max``: at most ``count`` tasks (threads included)."""

    def __init__(self, parent: str, count: int) -> None:
        self.path = os.path.join(parent, f"{PREFIX}{os.getpid()}-{time.monotonic_ns()}")
        os.mkdir(self.path)
        try:
            self.limit_tasks(count)
        except OSError:
            self.destroy()
            raise

    def destroy(self) -> None:
        """Kills every process in the cgroup and removes it (idempotent)."""
        _kill_and_remove(self.path)


def _kill_and_remove(path: str) -> None:
    if not os.path.isdir(path):
        return
    try:
        _write(os.path.join(path, "cgroup.kill"), "1")
    except OSError:
        try:
            for pid in _read(os.path.join(path, "cgroup.procs")).split():
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
        except OSError:
            pass
    for _ in range(200):  # the kernel empties it after the processes are reaped
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)
    log.warning("sandbox: could not remove cgroup %s", path)


def sweep_stale(parent: str) -> list[str]:
    """Removes worker cgroups of hosts that are gone (a host killed before its cleanup)."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        pid = name[len(PREFIX):].split("-", 1)[0] if name.startswith(PREFIX) else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _kill_and_remove(os.path.join(parent, name))
            removed.append(name)
    return removed
