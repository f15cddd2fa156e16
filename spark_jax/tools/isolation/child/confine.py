"""Child side: namespaces, identity, limits and the syscall filter. Standard library only: this
source runs inside the sandbox (see sandbox_main for the order of the steps); the tool workers
(tool_worker_main) use its limits and filter loading too.
"""

import ctypes
import os
import platform
import resource
import signal
import struct
import sys
import time

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
NAMESPACES = {"mount": CLONE_NEWNS, "net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "pid": CLONE_NEWPID}
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYSCALLS = {  # (seccomp, capset, keyctl) by machine
    "x86_64": (317, 126, 250),
    "aarch64": (277, 91, 219),
}
KEYCTL_JOIN_SESSION_KEYRING = 1
OVERFLOW_UID = 65534
PID_LINE = "SANDBOX-PID "
MAX_CPU_S = 3600


class Unavailable(Exception):
    """A confinement layer this host does not allow; strict mode refuses to run without it."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())


def die_with_parent(libc, parent_pid=None) -> None:
    """SIGKILL when the parent dies (set again after every change of uid, which clears it);
    exits now if the parent ``parent_pid`` is already gone (the fork raced its death). Inside a
    new PID namespace the parent is invisible (getppid() is 0): there, pass None."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def wait_for_cgroups(names, timeout_s: float = 30.0, cgroup_file: str = "/proc/self/cgroup") -> None:
    """Waits until this process is in every cgroup named ``names`` (the host moves it there
    right after the fork): a child forked before that would stay outside the task limit."""
    deadline = time.monotonic() + timeout_s
    while True:
        with open(cgroup_file) as f:
            paths = [line.rstrip("\n").split(":", 2)[-1] for line in f]
        if all(any(p.endswith("/" + name) for p in paths) for name in names):
            return
        if time.monotonic() > deadline:
            raise Unavailable("tasks", f"not moved into cgroups {names} within {timeout_s:g} s")
        time.sleep(0.001)


def _enter_user_namespace(libc) -> str | None:
    """unshare() into a user namespace (mapping only our own uid and gid, to its root) and the
    other four. Returns None, or why not."""
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(ctypes.c_int(sum(NAMESPACES.values()) | CLONE_NEWUSER)) != 0:
        return f"unshare(CLONE_NEWUSER | mount, net, ipc, pid): {_errno_text()}"
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"0 {uid} 1"),
                       ("/proc/self/gid_map", f"0 {gid} 1")):
        with open(path, "w") as f:
            f.write(text)
    return None


def kernel_uid_is_root(probe: str = "/proc/sys/kernel") -> bool:
    """Whether this process's uid is uid 0 of the initial user namespace, whatever uid a user
    namespace shows for it. Global sysctl files belong to that uid: they appear owned by our
    own uid exactly when we are it (else by root, or by the overflow uid where it is unmapped).
    Without /proc/sys we cannot tell, and assume the worst."""
    try:
        return os.stat(probe).st_uid == os.getuid()
    except OSError:
        return True


def leave_kernel_root(libc, uid, gid, unreadable) -> str | None:
    """Before a user namespace: a process whose kernel uid is 0 would keep it inside, and the
    kernel checks /proc/sys, /proc/irq and other root-owned files by that uid. A root with
    CAP_SETUID switches to ``uid``/``gid`` first; ``unreadable()`` names a path of the Python
    installation that uid could not read, if any. Returns None when the kernel uid is not 0
    (any more), else why it stays 0."""
    if not kernel_uid_is_root():
        return None
    shown = os.getuid()
    why = "the kernel uid of this process is 0 (root" + (
        f", shown as {shown} in its user namespace" if shown else "") + (
        "), which a user namespace does not change: /proc/sys and other files of the kernel's "
        "root would stay writable")
    if os.geteuid() != 0 or uid is None:
        return why + "; run the host as a non-root user, or as root with CAP_SYS_ADMIN"
    blocked = unreadable()
    if blocked:
        return why + f"; uid {uid} could not read {blocked} (not readable by other users)"
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        return why + f"; switching to uid {uid} failed: {e.strerror}"
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a change of uid clears it
    # ... and makes the process non-dumpable, so that its /proc files (uid_map) belong to root;
    # enter_namespaces clears the flag again once the maps are written.
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    return None


def enter_namespaces(libc, strict: bool, layers: dict, uid=None, gid=None,
                     unreadable=lambda: None) -> tuple:
    """New mount, network, IPC and PID namespaces: as root directly; without root (or as a root
    that may not, as in a container without CAP_SYS_ADMIN) inside a user namespace, never as the
    kernel's uid 0 (a root first switches to ``uid``; see leave_kernel_root). Returns (names
    entered, whether in a user namespace). Strict mode wants all of them; otherwise each is
    tried alone and a refusal is reported, not fatal."""
    flags = sum(NAMESPACES.values())
    if os.geteuid() == 0 and libc.unshare(ctypes.c_int(flags)) == 0:
        entered, userns = set(NAMESPACES), False
    else:
        first = "" if os.geteuid() != 0 else f"unshare(mount, net, ipc, pid): {_errno_text()}; "
        was = os.getuid()
        kernel_root = leave_kernel_root(libc, uid, gid, unreadable)
        switched = os.getuid() != was
        if kernel_root is not None:
            if strict:
                raise Unavailable("user namespace", first + kernel_root)
            layers["kernel_uid"] = "off: " + kernel_root
        why = _enter_user_namespace(libc)
        if switched:  # the maps are written: non-dumpable again
            libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        if why is None:
            layers["userns"] = "on"
            entered, userns = set(NAMESPACES), True
        elif strict:
            if first:
                raise Unavailable("namespaces", first + "in a user namespace: " + why)
            raise Unavailable("user namespace", why + " (unprivileged user namespaces disabled?)")
        else:
            layers["userns"] = "off: " + first + why
            userns = False
            entered = set() if os.geteuid() != 0 else {
                name for name, flag in NAMESPACES.items() if libc.unshare(ctypes.c_int(flag)) == 0}
    for name in NAMESPACES:
        layers.setdefault(name + "ns", "on" if name in entered else "off: unshare refused")
    return entered, userns


def fork_into_pid_namespace(libc) -> None:
    """Forks the process that runs the program (PID 1 of the new PID namespace) and turns this
    one into its supervisor, which reports the child's host pid, waits, and exits as it did.
    Returns only in the child."""
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.read(go_r, 1)  # until the supervisor has reported our pid: it must come first
        os.close(go_r)
        die_with_parent(libc)
        os.setsid()  # our own process group: kill(0, ...) reaches nothing but the sandbox
        return
    os.close(go_r)
    os.write(1, f"{PID_LINE}{pid}\n".encode())
    os.close(go_w)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # the pipes belong to the program; EOF must follow its exit
        os.dup2(devnull, fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def apply_rlimits(settings: dict) -> tuple:
    """Address space, file size, open files, no core files and a CPU ceiling (the task limit
    comes after the change of uid: limit_tasks). Returns (names applied, limits)."""
    mb = 1024 * 1024
    limits = {
        "RLIMIT_AS": settings["memory_mb"] * mb,
        "RLIMIT_FSIZE": settings["disk_mb"] * mb,
        "RLIMIT_NOFILE": settings["max_open_files"],
        "RLIMIT_CORE": 0,
        "RLIMIT_CPU": MAX_CPU_S + settings["setup_cpu_s"],
    }
    applied = []
    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
            applied.append(name)
        except (ValueError, OSError):
            pass
    return applied, limits


def limit_tasks(count: int) -> bool:
    """RLIMIT_NPROC: at most ``count`` tasks (processes and threads). The kernel counts them per
    user namespace and kernel uid, so this bounds the sandbox alone where its uid is fresh or its
    user namespace its own; it does nothing for the kernel's uid 0."""
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (count, count))
        return True
    except (ValueError, OSError):
        return False


def join_fresh_session_keyring(libc) -> None:
    """A new, empty session keyring: the host's session keys (their descriptions in /proc/keys,
    and their payloads to whoever possesses the keyring) are not the program's."""
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise Unavailable("keyring", f"no keyctl number for {machine}")
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(SYSCALLS[machine][2]), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING),
                      ctypes.c_void_p(None))
    if rc < 0:
        raise Unavailable("keyring", f"keyctl(KEYCTL_JOIN_SESSION_KEYRING): {_errno_text()}")


def drop_to_uid(uid: int, gid: int) -> None:
    """As root: a fresh uid and gid with no supplementary groups (already done where a root
    without CAP_SYS_ADMIN switched before its user namespace)."""
    if os.getuid() == os.geteuid() == uid and os.getgid() == gid and not os.getgroups():
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise RuntimeError("privilege drop did not take effect")


def drop_to_unmapped_uid(libc) -> None:
    """Without root: a nested user namespace with no uid map, so the program runs as the
    overflow uid, and no capabilities left in it (none were kept outside)."""
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise Unavailable("identity", f"no capset number for {machine}")
    if libc.unshare(ctypes.c_int(CLONE_NEWUSER)) != 0:
        raise Unavailable("identity", f"nested user namespace: {_errno_text()}")
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # effective, permitted, inheritable: all empty, both words
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYSCALLS[machine][1]), header, data) != 0:
        raise Unavailable("identity", f"capset: {_errno_text()}")
    if os.getuid() != OVERFLOW_UID:
        raise Unavailable("identity", f"uid is {os.getuid()} after the nested user namespace")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(libc, program: bytes) -> None:
    """Loads a BPF program (compiled by the host from the allow list) on every thread."""
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise Unavailable("seccomp", f"no seccomp number for {machine}")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc.syscall.restype = ctypes.c_long
    # seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog)
    rc = libc.syscall(ctypes.c_long(SYSCALLS[machine][0]), ctypes.c_uint(1), ctypes.c_uint(1),
                      ctypes.byref(fprog))
    if rc != 0:
        raise Unavailable("seccomp", f"seccomp(): {_errno_text()}")


def no_new_privs(libc) -> bool:
    return libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0


# --- the audit hook: readable refusals from Python, and the last guard in unsafe mode --------
_BLOCKED_EVENTS = {
    "socket.__new__": "network access is disabled in this sandbox",
    "socket.connect": "network access is disabled in this sandbox",
    "socket.bind": "network access is disabled in this sandbox",
    "subprocess.Popen": "starting processes is disabled in this sandbox",
    "os.system": "starting processes is disabled in this sandbox",
    "os.exec": "starting processes is disabled in this sandbox",
    "os.posix_spawn": "starting processes is disabled in this sandbox",
    "os.spawn": "starting processes is disabled in this sandbox",
    "os.fork": "starting processes is disabled in this sandbox",
    "os.forkpty": "starting processes is disabled in this sandbox",
    "pty.spawn": "starting processes is disabled in this sandbox",
}
_PATH_EVENTS = {  # event -> indices of path arguments that are written
    "os.mkdir": (0,), "os.rename": (0, 1), "os.remove": (0,), "os.rmdir": (0,),
    "os.symlink": (1,), "os.link": (1,), "os.chmod": (0,), "os.chown": (0,),
    "os.truncate": (0,), "os.utime": (0,), "shutil.rmtree": (0,), "os.mkfifo": (0,),
    "os.mknod": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def make_audit_hook(workdir: str):
    root = os.path.realpath(workdir)
    own_pid = os.getpid()
    own_proc = (f"/proc/{own_pid}/", "/proc/self/", "/proc/thread-self/")

    def other_process(path) -> bool:
        """Paths into another process's /proc entry (environ, mem, cmdline, ...)."""
        if isinstance(path, int):
            return False
        try:
            p = os.path.abspath(os.fsdecode(path)) + "/"
        except Exception:
            return False
        parts = p.split("/")
        return len(parts) > 3 and parts[1] == "proc" and parts[2].isdigit() and not p.startswith(own_proc)

    def inside(path) -> bool:
        if isinstance(path, int):  # an already-open descriptor
            return True
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep) or p == "/dev/null"

    def hook(event, args):
        msg = _BLOCKED_EVENTS.get(event)
        if msg is not None:
            raise PermissionError(msg)
        # Not 0 either: inside a PID namespace getppid() is 0, and kill(0) would not fail.
        if event in ("os.kill", "os.killpg") and args and args[0] not in (own_pid, -own_pid):
            raise PermissionError("signalling other processes is not allowed in this sandbox")
        if event == "open" and args and other_process(args[0]):
            raise PermissionError("reading other processes' /proc entries is not allowed")
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writing and not inside(path):
                raise PermissionError(f"writing outside the working directory is not allowed: {path!r}")
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and not inside(args[i]):
                    raise PermissionError(f"{event} outside the working directory is not allowed")

    return hook


def install_audit_hook(workdir: str) -> None:
    sys.addaudithook(make_audit_hook(workdir))
