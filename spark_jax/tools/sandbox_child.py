"""The sandbox's child side: confines its own process, then runs untrusted Python read from stdin.

This file is executed as ``python -I -c <this source> <settings-json>`` by ``sandbox.py`` and
must only use the standard library (it is never imported by the child; the host imports it
in tests). It runs these steps, each one best-effort and reported in the READY line:

1. (root) ``unshare(CLONE_NEWNS | CLONE_NEWNET)``: a private mount table and an empty network
   namespace (loopback down, no interfaces).
2. (mount namespace) read-only-for-us tmpfs over the world-writable directories (/tmp,
   /var/tmp, /dev/shm, /run/lock), a size-limited tmpfs owned by the sandbox uid as the working
   directory, and a fresh /proc with ``hidepid=invisible`` so other users' processes (their
   command lines, environments) are not visible.
3. rlimits: address space, file size, processes, open files, no core files, CPU time.
4. (root) drop to an unprivileged uid/gid with no supplementary groups.
5. ``PR_SET_NO_NEW_PRIVS``, then a seccomp-BPF filter (x86_64) that refuses socket creation,
   process creation (fork, vfork, clone without CLONE_THREAD, clone3), exec, ptrace and
   namespace/mount/kernel-administration calls, on all threads (TSYNC).
6. A Python audit hook that refuses the same operations from Python with readable messages,
   and refuses writes outside the working directory (the only file-write guard when step 2
   is unavailable).
"""

from __future__ import annotations

import ast
import builtins
import ctypes
import json
import os
import platform
import resource
import struct
import sys

READY = "SANDBOX-READY "
FAILED = "SANDBOX-FAILED "
SETUP_FAILED_EXIT = 97
MAX_CPU_S = 3600

# --- seccomp -------------------------------------------------------------------------------
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM, ENOSYS = 1, 38
CLONE_THREAD = 0x00010000
X32_SYSCALL_BIT = 0x40000000

# x86_64 syscall numbers refused with EPERM.
X86_64_DENIED = {
    "socket": 41, "socketpair": 53, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249,
    "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
    "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163,
    "settimeofday": 164, "clock_settime": 227, "adjtimex": 159, "clock_adjtime": 305,
    "iopl": 172, "ioperm": 173, "quotactl": 179, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "fanotify_init": 300, "personality": 135, "syslog": 103,
    "uselib": 134, "lookup_dcookie": 212, "vhangup": 153, "sethostname": 170,
    "setdomainname": 171,
}
X86_64_DENIED.update({"tkill": 200, "pidfd_send_signal": 424})
X86_64_CLONE, X86_64_CLONE3 = 56, 435
X86_64_KILL, X86_64_TGKILL = 62, 234


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def build_seccomp_filter_x86_64(own_pid: int) -> bytes:
    """A BPF program (bytes of ``struct sock_filter``) implementing the policy above.

    Signals may only go to ``own_pid`` (which cannot fork, so it stays alone in its group)."""
    ld_w_abs, jeq, jset, jge, ret = 0x20, 0x15, 0x45, 0x35, 0x06
    prog = [
        _insn(ld_w_abs, 0, 0, 4),  # A = arch
        _insn(jeq, 1, 0, AUDIT_ARCH_X86_64),
        _insn(ret, 0, 0, SECCOMP_RET_KILL_PROCESS),  # i386/x32 entry points: no
        _insn(ld_w_abs, 0, 0, 0),  # A = syscall number
        _insn(jge, 0, 1, X32_SYSCALL_BIT),
        _insn(ret, 0, 0, SECCOMP_RET_KILL_PROCESS),
        # clone: threads only (CLONE_THREAD set in the low word of arg0)
        _insn(jeq, 0, 4, X86_64_CLONE),
        _insn(ld_w_abs, 0, 0, 16),
        _insn(jset, 0, 1, CLONE_THREAD),
        _insn(ret, 0, 0, SECCOMP_RET_ALLOW),
        _insn(ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        # clone3 hides its flags in memory: ENOSYS makes glibc fall back to clone
        _insn(jeq, 0, 1, X86_64_CLONE3),
        _insn(ret, 0, 0, SECCOMP_RET_ERRNO | ENOSYS),
        # kill(pid, sig): only 0 (own group), own pid, -own pid
        _insn(jeq, 0, 6, X86_64_KILL),
        _insn(ld_w_abs, 0, 0, 16),
        _insn(jeq, 3, 0, 0),
        _insn(jeq, 2, 0, own_pid & 0xFFFFFFFF),
        _insn(jeq, 1, 0, (-own_pid) & 0xFFFFFFFF),
        _insn(ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        _insn(ret, 0, 0, SECCOMP_RET_ALLOW),
        # tgkill(tgid, tid, sig): only threads of this process
        _insn(jeq, 0, 4, X86_64_TGKILL),
        _insn(ld_w_abs, 0, 0, 16),
        _insn(jeq, 1, 0, own_pid & 0xFFFFFFFF),
        _insn(ret, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        _insn(ret, 0, 0, SECCOMP_RET_ALLOW),
    ]
    for nr in sorted(set(X86_64_DENIED.values())):
        prog.append(_insn(jeq, 0, 1, nr))
        prog.append(_insn(ret, 0, 0, SECCOMP_RET_ERRNO | EPERM))
    prog.append(_insn(ret, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(libc) -> str:
    """Installs the filter on every thread; returns "on" or the reason it is off."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"off: no filter for {platform.machine()}"
    program = build_seccomp_filter_x86_64(os.getpid())
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc.syscall.restype = ctypes.c_long
    # seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog)
    rc = libc.syscall(ctypes.c_long(317), ctypes.c_uint(1), ctypes.c_uint(1), ctypes.byref(fprog))
    if rc != 0:
        err = ctypes.get_errno()
        return f"off: seccomp() failed: {os.strerror(err) if err else rc}"
    return "on"


# --- namespaces and mounts ------------------------------------------------------------------
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")


def _mount(libc, source, target, fstype, flags, data) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or ''} on {target}: {os.strerror(err)}")


def _unshare(libc, flags: int) -> bool:
    return libc.unshare(ctypes.c_int(flags)) == 0


def _closed_ancestor(path: str) -> str | None:
    """The highest directory above ``path`` that other users cannot enter, if any."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    current = ""
    for part in parts[:-1]:
        current += os.sep + part
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def expose_paths(libc, paths: list[str]) -> list[str]:
    """Makes ``paths`` (the Python installation) readable for the sandbox uid when they sit
    under a directory closed to other users (e.g. /root/.pyenv): that directory is covered by
    an empty tmpfs and each path is bind-mounted back, read-only. The rest of it stays hidden."""
    plan = []
    for p in dict.fromkeys(os.path.realpath(p) for p in paths):
        top = _closed_ancestor(p)
        if top is not None and os.path.isdir(p):
            plan.append((p, top, os.open(p, os.O_PATH | os.O_DIRECTORY)))
    covered = []
    for _p, top, _fd in plan:
        if top not in covered:
            _mount(libc, "tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
            covered.append(top)
    for p, _top, fd in plan:
        os.makedirs(p, mode=0o755, exist_ok=True)
        _mount(libc, f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
        _mount(libc, None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
        os.close(fd)
    return [f"hid {top}" for top in covered]


def setup_mounts(libc, workdir: str, uid: int, gid: int, disk_mb: int, expose: list[str]) -> list[str]:
    """Inside a fresh mount namespace: hide world-writable dirs, private tmpfs workdir, /proc."""
    done = []
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
    done += expose_paths(libc, expose)
    for d in WORLD_WRITABLE_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            st = os.stat(d)
            if st.st_mode & 0o002:
                # A Python installation inside it (a venv in a checkout under /tmp, as CI clones
                # can be) must stay readable: hold it open, cover the directory, bind it back.
                inside = [os.path.realpath(p) for p in expose
                          if os.path.realpath(p).startswith(os.path.realpath(d) + os.sep) and os.path.isdir(p)]
                held = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in dict.fromkeys(inside)]
                _mount(libc, "tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")
                for p, fd in held:
                    os.makedirs(p, mode=0o755, exist_ok=True)
                    _mount(libc, f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
                    _mount(libc, None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
                    os.close(fd)
                done.append(d + (f" (python kept: {', '.join(p for p, _ in held)})" if held else ""))
    os.makedirs(workdir, mode=0o700, exist_ok=True)  # on the covering tmpfs, if under one
    _mount(
        libc, "tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
        f"size={disk_mb}m,nr_inodes=4096,mode=0700,uid={uid},gid={gid}",
    )
    done.append("workdir-tmpfs")
    try:
        _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
        done.append("proc-hidepid")
    except OSError:
        pass
    return done


# --- audit hook -----------------------------------------------------------------------------
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
        if event in ("os.kill", "os.killpg") and args and args[0] not in (0, own_pid, -own_pid):
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


# --- running the code -----------------------------------------------------------------------
def compile_with_echo(source: str):
    """Compiles ``source``; a final bare expression's value is printed (as in a notebook)."""
    tree = ast.parse(source, filename="<tool>", mode="exec")
    echo = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        echo = compile(ast.Expression(last.value), "<tool>", "eval")
    return compile(tree, "<tool>", "exec"), echo


def _format_user_error(exc: BaseException) -> str:
    import traceback

    # Only the user's frames: the bootstrap itself runs as "<string>" (python -c).
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != "<string>"]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames[-8:])
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def run_user_code(source: str) -> int:
    import linecache

    linecache.cache["<tool>"] = (len(source), None, source.splitlines(True), "<tool>")
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        body, echo = compile_with_echo(source)
        exec(body, namespace)
        if echo is not None:
            value = eval(echo, namespace)
            if value is not None:
                print(repr(value))
        return 0
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        print(code, file=sys.stderr)
        return 1
    except MemoryError:
        sys.stderr.write("MemoryError: the program ran out of its memory limit\n")
        return 1
    except BaseException as e:  # noqa: BLE001 - the user's own error, reported as text
        try:
            sys.stderr.write(_format_user_error(e))
        except BaseException:
            sys.stderr.write(f"{type(e).__name__}\n")
        return 1


def main(settings: dict) -> int:
    sys.dont_write_bytecode = True
    libc = ctypes.CDLL(None, use_errno=True)
    layers: dict = {}
    workdir, uid, gid = settings["workdir"], settings["uid"], settings["gid"]
    is_root = os.geteuid() == 0
    disabled = set(settings.get("disable", ()))

    mounted = False
    if "namespaces" in disabled:
        layers["netns"] = layers["mounts"] = "off: disabled by settings"
    elif is_root:
        if _unshare(libc, CLONE_NEWNET):
            layers["netns"] = "on"
        else:
            layers["netns"] = f"off: unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
        if _unshare(libc, CLONE_NEWNS):
            try:
                layers["mounts"] = setup_mounts(
                    libc, workdir, uid, gid, settings["disk_mb"], settings.get("expose", [])
                )
                mounted = True
            except OSError as e:
                layers["mounts"] = f"off: {e}"
        else:
            layers["mounts"] = f"off: unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    else:
        layers["netns"] = layers["mounts"] = "off: not root"

    mb = 1024 * 1024
    limits = {
        "RLIMIT_AS": settings["memory_mb"] * mb,
        "RLIMIT_FSIZE": settings["disk_mb"] * mb,
        "RLIMIT_NOFILE": settings["max_open_files"],
        "RLIMIT_CORE": 0,
        "RLIMIT_CPU": MAX_CPU_S + settings["setup_cpu_s"],
    }
    if is_root:  # RLIMIT_NPROC counts the real uid's processes: only meaningful for our own uid
        limits["RLIMIT_NPROC"] = settings["max_processes"]
    applied = []
    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
            applied.append(name)
        except (ValueError, OSError):
            pass
    layers["rlimits"] = applied

    if is_root and not mounted:
        blocked = [p for p in settings.get("expose", []) if _closed_ancestor(p)]
        if blocked:  # without a mount namespace the uid could not even read Python itself
            layers["uid"] = f"off: {blocked[0]} is not readable by other users"
            is_root = False
    if is_root:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise RuntimeError("privilege drop did not take effect")
        layers["uid"] = uid
    elif "uid" not in layers:
        layers["uid"] = f"off: not root (running as uid {os.getuid()})"

    os.chdir(workdir)
    os.umask(0o077)
    layers["mount_guard"] = "namespace" if mounted else "audit-hook-and-sweep"

    PR_SET_NO_NEW_PRIVS = 38
    nnp = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    layers["no_new_privs"] = "on" if nnp else "off"
    if "seccomp" in disabled:
        layers["seccomp"] = "off: disabled by settings"
    else:
        layers["seccomp"] = install_seccomp(libc) if nnp else "off: no_new_privs unavailable"
    sys.addaudithook(make_audit_hook(workdir))
    layers["audit_hook"] = "on"

    preloaded = []
    for mod in settings.get("preload", ()):
        try:
            __import__(mod)
            preloaded.append(mod)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            layers.setdefault("preload_errors", []).append(f"{mod}: {type(e).__name__}: {e}")
    layers["preloaded"] = preloaded

    sys.stdout.write(READY + json.dumps(layers) + "\n")
    sys.stdout.flush()

    # The call: first line the CPU seconds allowed, then the program.
    header = sys.stdin.buffer.readline()
    source = sys.stdin.buffer.read().decode("utf-8", errors="replace")
    sys.stdin.close()
    cpu_s = max(1, min(int(header.strip() or b"10"), MAX_CPU_S))
    # CPU budget for the user's code starts now, whatever the setup used.
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    cpu = min(spent + cpu_s, limits["RLIMIT_CPU"])
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ValueError, OSError):
        pass
    return run_user_code(source)


if __name__ == "__main__":
    try:
        _settings = json.loads(sys.argv[1])
    except (IndexError, ValueError) as _e:
        sys.stdout.write(FAILED + f"bad settings: {_e}\n")
        sys.stdout.flush()
        os._exit(SETUP_FAILED_EXIT)
    try:
        _code = main(_settings)
    except BaseException as _e:  # noqa: BLE001 - setup failure: report and stop
        sys.stdout.write(FAILED + f"{type(_e).__name__}: {_e}\n")
        sys.stdout.flush()
        os._exit(SETUP_FAILED_EXIT)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(_code)
