"""Host side: the seccomp allow list of the sandbox and of the tool workers, compiled to BPF
with the system's libseccomp (the tool workers get it without the signal calls).

Every system call not listed here fails with EPERM (``clone3`` with ENOSYS, so that glibc falls
back to ``clone``, which is allowed for threads only); calls of other ABIs (i386, x32) kill the
process. The list is what CPython, numpy, scipy and sympy use once the sandbox is set up (traced
with ``strace -f`` over imports, linear algebra, threads, files in the working directory,
timers), plus their close relatives, less everything that reaches past the process:

- no processes, exec, ptrace, pidfds, ``process_vm_*``, ``kcmp``, ``rt_sigqueueinfo``;
- no sockets, no SysV or POSIX IPC (``shm*``, ``msg*``, ``sem*``, ``mq_*``), no ``memfd_create``:
  memory the 1 GiB ``RLIMIT_AS`` would not count, and objects that could outlive the call;
- no inotify/fanotify, no ``flock``; ``fcntl`` without locks, owner or signal commands
  (``F_SETOWN``, ``F_SETSIG``, leases, dnotify); ``ioctl`` only for tty queries and
  close-on-exec; ``prctl`` only for reading state and naming threads;
- no mount, namespace, keyring, BPF, perf, io_uring, userfaultfd or kernel administration.

libseccomp is called through ctypes (``libseccomp.so.2``, Debian's libseccomp2): the binding is
six functions, and the host compiles once and hands the BPF to each worker, which loads it
with the bare ``seccomp()`` call (child.confine.load_seccomp). pyseccomp also installs here,
but finds the library by running ``ldconfig`` at import and would add a dependency for nothing
we use.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import tempfile

ALLOWED = """
read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 open openat openat2
close close_range lseek stat fstat lstat newfstatat statx statfs fstatfs access faccessat
faccessat2 readlink readlinkat getdents getdents64 getcwd chdir fchdir mkdir mkdirat rmdir
unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat chmod fchmod fchmodat
truncate ftruncate fsync fdatasync fallocate utime utimes utimensat futimesat umask dup dup2
dup3 pipe pipe2 copy_file_range sendfile fadvise64 getxattr lgetxattr fgetxattr listxattr
llistxattr flistxattr
brk mmap munmap mremap mprotect madvise msync mincore mbind get_mempolicy set_mempolicy
select pselect6 poll ppoll epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait
epoll_pwait2 eventfd eventfd2 timerfd_create timerfd_settime timerfd_gettime
clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time getitimer setitimer alarm
timer_create timer_settime timer_gettime timer_getoverrun timer_delete times
rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigsuspend rt_sigtimedwait sigaltstack
pause restart_syscall
futex futex_waitv set_robust_list get_robust_list set_tid_address rseq gettid getpid getppid
getuid geteuid getgid getegid getgroups getresuid getresgid getpgrp getpgid getsid sched_yield
sched_getaffinity sched_setaffinity sched_getparam sched_getscheduler sched_get_priority_max
sched_get_priority_min sched_getattr getpriority exit exit_group wait4 waitid arch_prctl
getrlimit setrlimit prlimit64 getrusage sysinfo uname getrandom capget getcpu membarrier
""".split()
# Signals: inside the sandbox's PID namespace only its own process can be named.
SIGNALS = ("kill", "tgkill", "tkill")

CLONE_THREAD = 0x00010000
FCNTL_COMMANDS = {  # no F_SETLK*/F_OFD_SETLK* (locks), F_SETOWN*/F_SETSIG, F_SETLEASE, F_NOTIFY
    "F_DUPFD": 0, "F_GETFD": 1, "F_SETFD": 2, "F_GETFL": 3, "F_SETFL": 4, "F_GETLK": 5,
    "F_OFD_GETLK": 36, "F_DUPFD_CLOEXEC": 1030, "F_GETPIPE_SZ": 1032, "F_GET_SEALS": 1034,
}
IOCTL_COMMANDS = {
    "TCGETS": 0x5401, "TIOCGWINSZ": 0x5413, "FIONREAD": 0x541B, "FIONBIO": 0x5421,
    "FIONCLEX": 0x5450, "FIOCLEX": 0x5451,
}
PRCTL_OPTIONS = {
    "PR_GET_PDEATHSIG": 2, "PR_GET_DUMPABLE": 3, "PR_SET_NAME": 15, "PR_GET_NAME": 16,
    "PR_GET_SECCOMP": 21, "PR_CAPBSET_READ": 23, "PR_GET_TIMERSLACK": 30,
    "PR_GET_NO_NEW_PRIVS": 39, "PR_GET_TID_ADDRESS": 40, "PR_SET_THP_DISABLE": 41,
    "PR_GET_THP_DISABLE": 42, "PR_GET_SPECULATION_CTRL": 52, "PR_SET_VMA": 0x53564D41,
}

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
SCMP_FLTATR_ACT_BADARCH, SCMP_FLTATR_CTL_NNP, SCMP_FLTATR_CTL_OPTIMIZE = 2, 3, 8


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded or refused the filter."""


@functools.lru_cache(maxsize=1)
def _lib():
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError as e:
        raise SeccompUnavailable(f"libseccomp.so.2 not found ({e}); install libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _rules(signals: bool) -> list[tuple[str, int, list[tuple[int, int, int, int]]]]:
    """(syscall, action, [(arg, op, a, b)]) for the whole policy; rules of one syscall are ORed."""
    allow = SCMP_ACT_ALLOW
    rules = [(name, allow, []) for name in ALLOWED + list(SIGNALS if signals else ())]
    rules.append(("clone", allow, [(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)]))
    rules.append(("clone3", scmp_act_errno(errno.ENOSYS), []))
    rules += [("fcntl", allow, [(1, SCMP_CMP_EQ, v, 0)]) for v in FCNTL_COMMANDS.values()]
    rules += [("ioctl", allow, [(1, SCMP_CMP_EQ, v, 0)]) for v in IOCTL_COMMANDS.values()]
    rules += [("prctl", allow, [(0, SCMP_CMP_EQ, v, 0)]) for v in PRCTL_OPTIONS.values()]
    return rules


def _build(signals: bool):
    lib = _lib()
    ctx = lib.seccomp_init(scmp_act_errno(errno.EPERM))
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0)  # the child sets no_new_privs itself
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)  # binary tree (libseccomp >= 2.5)
        for name, action, args in _rules(signals):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:  # unknown to this libseccomp (newer than it, or not on this machine)
                continue
            arr = (_ArgCmp * max(1, len(args)))(*[_ArgCmp(*a) for a in args])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), arr)
            if rc < 0:
                raise SeccompUnavailable(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")
        return ctx
    except BaseException:
        lib.seccomp_release(ctx)
        raise


def _export(signals: bool) -> bytes:
    ctx = _build(signals)
    lib = _lib()
    try:
        with tempfile.TemporaryFile() as f:
            rc = lib.seccomp_export_bpf(ctx, f.fileno())
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            f.seek(0)
            return f.read()
    finally:
        lib.seccomp_release(ctx)


@functools.lru_cache(maxsize=2)
def compile_filter(signals: bool = True) -> bytes:
    """The BPF program (``struct sock_filter`` array). ``signals``: allow kill/tgkill/tkill,
    for processes in a PID namespace of their own (where no one else can be named)."""
    return _export(signals)


def filter_or_reason(signals: bool = True) -> tuple[bytes, str | None]:
    """(program, None), or (b"", why there is none)."""
    try:
        return compile_filter(signals), None
    except SeccompUnavailable as e:
        return b"", str(e)
