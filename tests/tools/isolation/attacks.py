"""Attack programs for the python sandbox: one per class of issue 17, each trying several
variants of its class (raw syscalls, Python APIs, ``dir_fd`` detours). A program prints one JSON
line ``{variant: outcome}``; an outcome starting with "GOT" is an attack that worked. Signal
attempts use signal 0 (existence and permission only), so a regression cannot hurt the host.

Shared by test_sandbox_isolation.py (as this host runs it) and rootless_probe.py (as a non-root
host in a user namespace).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os

WATCHED_DIRS = ["/", "/tmp", "/var/tmp", "/dev/shm", os.path.expanduser("~")]
SYSCALLS = (
    "shmget msgget semget mq_open memfd_create pidfd_open kill tgkill rt_sigqueueinfo "
    "rt_tgsigqueueinfo ptrace process_vm_readv inotify_init inotify_init1 fanotify_init flock "
    "unshare mount chroot socket socketpair fork clone execve bpf userfaultfd io_uring_setup "
    "perf_event_open keyctl add_key setuid prctl setns"
).split()


@functools.lru_cache(maxsize=1)
def syscall_numbers() -> dict[str, int]:
    """This machine's numbers for SYSCALLS (absent where it has no such call)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    numbers = {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in SYSCALLS}
    return {k: v for k, v in numbers.items() if v >= 0}


PRELUDE = r'''
import ctypes, errno, json, os, signal, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
HOST = {host}
NR = {numbers}
OUT = {{}}

def sc(name, *args):
    if name not in NR:
        raise OSError(errno.ENOSYS, name)
    conv = [a if isinstance(a, (bytes, ctypes.Array)) else ctypes.c_long(a) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *conv)
    if r < 0:
        raise OSError(ctypes.get_errno(), name)
    return r

def checked(fn, *args):
    ctypes.set_errno(0)
    r = fn(*args)
    if r < 0:
        raise OSError(ctypes.get_errno(), "libc")
    return r

def fcntl(fd, cmd, arg):
    return checked(libc.fcntl, fd, cmd, arg)

def attempt(name, fn):
    try:
        r = fn()
    except OSError as e:
        OUT[name] = "refused: " + (errno.errorcode.get(e.errno) or type(e).__name__)
        return
    except Exception as e:
        OUT[name] = f"refused: {{type(e).__name__}}: {{e}}"[:160]
        return
    OUT[name] = f"GOT: {{r!r}}"[:200]

def in_dir(path):
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
'''

ATTACKS = {
    # Shared memory and IPC objects: not counted by RLIMIT_AS, visible to later calls.
    "ipc": r'''
attempt("shmget 400 MiB", lambda: sc("shmget", 0, 400 << 20, 0o1000 | 0o600))
attempt("msgget", lambda: sc("msgget", 0, 0o1000 | 0o600))
attempt("semget", lambda: sc("semget", 0, 3, 0o1000 | 0o600))
attempt("mq_open", lambda: sc("mq_open", b"/spark_probe", os.O_CREAT | os.O_RDWR, 0o600, 0))
attempt("shm_open", lambda: __import__("_posixshmem").shm_open("/spark_probe", os.O_CREAT | os.O_RDWR, 0o600))
attempt("SharedMemory", lambda: __import__("multiprocessing.shared_memory", fromlist=["x"]).SharedMemory(create=True, size=1 << 20).name)
attempt("/dev/shm file", lambda: open("/dev/shm/spark_probe", "w").write("x"))
attempt("memfd_create", lambda: os.memfd_create("probe"))
attempt("memfd_create raw", lambda: sc("memfd_create", b"probe", 0))
''',
    # The host process: its environment and memory, its pid, signals to it.
    "host_process": r'''
def via_dirfd(name):
    pid = os.open(str(HOST), os.O_RDONLY | os.O_DIRECTORY, dir_fd=in_dir("/proc"))
    fd = os.open(name, os.O_RDONLY, dir_fd=pid)
    if name == "mem":
        maps = os.read(os.open("maps", os.O_RDONLY, dir_fd=pid), 4096).decode().split("\n")[0]
        return os.pread(fd, 64, int(maps.split("-")[0], 16))
    return os.read(fd, 200)
def other_pids():
    pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    if not pids:
        raise OSError(errno.ENOENT, "none")
    return pids
info = ctypes.create_string_buffer(128)
struct.pack_into("iii", info, 0, 0, 0, -1)  # si_code SI_QUEUE, as a user would send it
attempt("open /proc/HOST/environ", lambda: open(f"/proc/{HOST}/environ").read()[:80])
attempt("environ via dir_fd", lambda: via_dirfd("environ"))
attempt("mem via dir_fd", lambda: via_dirfd("mem"))
attempt("other pids in /proc", other_pids)
attempt("pidfd_open HOST", lambda: sc("pidfd_open", HOST, 0))
attempt("pidfd_open 1", lambda: sc("pidfd_open", 1, 0))
attempt("kill HOST", lambda: sc("kill", HOST, 0))
attempt("kill -1", lambda: os.kill(-1, 0))
attempt("tgkill HOST", lambda: sc("tgkill", HOST, HOST, 0))
attempt("rt_sigqueueinfo HOST", lambda: sc("rt_sigqueueinfo", HOST, 0, info))
attempt("rt_tgsigqueueinfo HOST", lambda: sc("rt_tgsigqueueinfo", HOST, HOST, 0, info))
attempt("ptrace attach HOST", lambda: sc("ptrace", 16, HOST, 0, 0))
attempt("process_vm_readv HOST", lambda: sc("process_vm_readv", HOST, 0, 0, 0, 0, 0))
''',
    # Signals routed through file descriptors to another process.
    "signals_by_fd": r'''
r, w = os.pipe()
owner = struct.pack("ii", 1, HOST)  # F_OWNER_PID
attempt("F_SETOWN HOST", lambda: fcntl(r, 8, HOST))
attempt("F_SETOWN -HOST", lambda: fcntl(r, 8, -HOST))
attempt("F_SETSIG", lambda: fcntl(r, 10, signal.SIGTERM))
attempt("F_SETOWN_EX", lambda: fcntl(r, 15, ctypes.create_string_buffer(owner, 8)))
attempt("F_NOTIFY", lambda: fcntl(in_dir("/"), 1026, 0x80000001))
attempt("F_SETLEASE", lambda: fcntl(os.open(sys.executable, os.O_RDONLY), 1024, 0))
attempt("FIOSETOWN", lambda: checked(libc.ioctl, r, 0x8901, ctypes.byref(ctypes.c_int(HOST))))
attempt("FIOASYNC", lambda: checked(libc.ioctl, r, 0x5452, ctypes.byref(ctypes.c_int(1))))
''',
    # Files outside the working directory, also relative to a directory descriptor.
    "files_outside": r'''
for d in ["/", "/tmp", "/usr", "/etc", "/dev", "/proc", os.path.dirname(sys.executable), sys.prefix, ".."]:
    attempt(f"openat {d}", lambda d=d: os.open("pwned_by_sandbox", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=in_dir(d)))
    attempt(f"mkdirat {d}", lambda d=d: os.mkdir("pwned_dir_by_sandbox", dir_fd=in_dir(d)))
def libc_open(path):
    return checked(libc.open, path, 0o101, 0o644)
attempt("libc open /tmp", lambda: libc_open(b"/tmp/pwned_by_sandbox"))
attempt("libc open /proc/self/cwd/..", lambda: libc_open(b"/proc/self/cwd/../pwned_by_sandbox"))
attempt("append to python", lambda: libc_open(os.__file__.encode()))
open("inside", "w").write("x")
attempt("rename out", lambda: checked(libc.rename, b"inside", b"/tmp/pwned_by_sandbox"))
attempt("link out", lambda: checked(libc.link, b"inside", b"/tmp/pwned_by_sandbox"))
''',
    # Watching the host's file accesses; locks that make the host wait.
    "watch_and_lock": r'''
attempt("inotify_init", lambda: sc("inotify_init"))
attempt("inotify_init1", lambda: sc("inotify_init1", 0))
attempt("fanotify_init", lambda: sc("fanotify_init", 0, 0))
f = os.open(sys.executable, os.O_RDONLY)
lock = ctypes.create_string_buffer(32)  # struct flock, all zero: F_RDLCK on the whole file
attempt("flock shared", lambda: sc("flock", f, 1 | 4))
attempt("flock exclusive", lambda: sc("flock", f, 2 | 4))
attempt("F_SETLK", lambda: fcntl(f, 6, lock))
attempt("F_SETLKW", lambda: fcntl(f, 7, lock))
attempt("F_OFD_SETLK", lambda: fcntl(f, 37, lock))
attempt("fcntl.flock", lambda: __import__("fcntl").flock(f, 1 | 4))
''',
    # Ways out of the process: namespaces, mounts, processes, network, kernel interfaces.
    "escape": r'''
def forked(name, *args):
    pid = sc(name, *args)
    if pid == 0:
        os._exit(0)
    return pid
attempt("unshare user", lambda: sc("unshare", 0x10000000))
attempt("setns", lambda: sc("setns", 0, 0))
attempt("mount tmpfs", lambda: sc("mount", b"none", b"/sandbox", b"tmpfs", 0, 0))
attempt("chroot", lambda: sc("chroot", b"/sandbox"))
attempt("socket inet", lambda: sc("socket", 2, 1, 0))
attempt("socket unix", lambda: sc("socket", 1, 1, 0))
attempt("socketpair", lambda: sc("socketpair", 1, 1, 0, ctypes.create_string_buffer(8)))
attempt("fork", lambda: forked("fork"))
attempt("clone process", lambda: forked("clone", 17, 0, 0, 0, 0))
attempt("execve", lambda: sc("execve", b"/bin/true", 0, 0))
attempt("bpf", lambda: sc("bpf", 0, 0, 0))
attempt("userfaultfd", lambda: sc("userfaultfd", 0))
attempt("io_uring_setup", lambda: sc("io_uring_setup", 1, ctypes.create_string_buffer(120)))
attempt("perf_event_open", lambda: sc("perf_event_open", 0, 0, -1, -1, 0))
attempt("keyctl", lambda: sc("keyctl", 0, 0))
attempt("setuid 0", lambda: sc("setuid", 0))
attempt("prctl clear pdeathsig", lambda: sc("prctl", 1, 0, 0, 0, 0))
attempt("prctl dumpable", lambda: sc("prctl", 4, 1, 0, 0, 0))
''',
    # The kernel's global interfaces in /proc: sysctls, IRQs, buses, magic SysRq. Writes only
    # ever write back the value already there, and the dangerous files are only opened for
    # writing, never written: a regression must not change the host.
    "proc_kernel": r'''
def open_for_writing(path):
    fd = checked(libc.open, path.encode(), os.O_WRONLY)
    os.close(fd)
    return "opened for writing"
def write_same_value(path):
    with open(path, "rb") as f:
        value = f.read(64)
    if not value.strip().isdigit():
        raise OSError(errno.EINVAL, "unexpected content")
    fd = checked(libc.open, path.encode(), os.O_WRONLY)
    try:
        return "wrote " + str(checked(libc.write, fd, value, len(value))) + " bytes"
    finally:
        os.close(fd)
def read_some(path):
    with open(path, "rb") as f:
        data = f.read(64)
    if not data:
        raise OSError(errno.ENODATA, "empty")
    return data
attempt("write printk_ratelimit_burst", lambda: write_same_value("/proc/sys/kernel/printk_ratelimit_burst"))
for path in ["/proc/sys/kernel/core_pattern", "/proc/self/root/proc/sys/kernel/core_pattern",
             "/proc/1/root/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
             "/proc/sysrq-trigger", "/proc/irq/default_smp_affinity"]:
    attempt(f"open {path} for writing", lambda p=path: open_for_writing(p))
for path in ["/proc/kcore", "/proc/timer_list", "/proc/sched_debug", "/proc/kallsyms", "/proc/bus/pci/devices"]:
    attempt(f"read {path}", lambda p=path: read_some(p))
attempt("list /proc/irq", lambda: os.listdir("/proc/irq") or (_ for _ in ()).throw(OSError(errno.ENOENT, "empty")))
''',
    # The kernel's keyrings: the host's session keys, by name in /proc/keys and by keyctl.
    "keyring": r'''
def listed(path):
    with open(path) as f:
        text = f.read()
    if not text.strip():
        raise OSError(errno.ENODATA, "empty")
    return text[:120]
attempt("read /proc/keys", lambda: listed("/proc/keys"))
attempt("read /proc/key-users", lambda: listed("/proc/key-users"))
attempt("keyctl describe session keyring", lambda: sc("keyctl", 6, -3, ctypes.create_string_buffer(256), 256))
attempt("keyctl read user keyring", lambda: sc("keyctl", 11, -4, ctypes.create_string_buffer(256), 256))
attempt("add_key to session keyring", lambda: sc("add_key", b"user", b"probe", b"x", 1, -3))
''',
    # A thread bomb: raw clone(CLONE_THREAD) with one shared stack (each thread only waits in
    # pause(), so it needs no stack and no address space), and Python threads with small
    # stacks. At most 400 tasks each, so that a regression cannot exhaust the host's pids.
    "thread_bomb": r'''
import mmap, platform, threading
CLONE_THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000  # VM FS FILES SIGHAND THREAD SYSVSEM
# x86_64: clone(rdi=flags, rsi=stack, 0, 0, 0); the parent returns its result, the child thread
# waits in pause() and then exits (exit, not exit_group).
CODE = bytes.fromhex("b838000000" "31d2" "4531d2" "4531c0" "0f05" "4885c0" "7401" "c3"
                     "b822000000" "0f05" "b83c000000" "31ff" "0f05")
ATTEMPTS, ENOUGH = 400, 64
KEEP = []
def raw_clone_bomb():
    if platform.machine() != "x86_64":
        raise OSError(errno.ENOSYS, "x86_64 only")
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(CODE)
    KEEP.append(page)  # the threads wait inside this page: it must stay mapped until the end
    clone = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_ulong, ctypes.c_void_p)(
        ctypes.addressof(ctypes.c_char.from_buffer(page)))
    stack = ctypes.create_string_buffer(1 << 16)
    top = (ctypes.addressof(stack) + (1 << 16) - 256) & ~15
    made, err = 0, 0
    for _ in range(ATTEMPTS):
        r = clone(CLONE_THREAD_FLAGS, top)
        if r < 0:
            err = -r
            break
        made += 1
    OUT["raw clone threads made"] = f"{made}, then {errno.errorcode.get(err, err)}"
    if made < ENOUGH:
        raise OSError(err, f"stopped after {made}")
    return made
def python_thread_bomb():
    threading.stack_size(64 * 1024)
    stop = threading.Event()
    made = 0
    try:
        for _ in range(ATTEMPTS):
            threading.Thread(target=stop.wait, daemon=True).start()
            made += 1
    except RuntimeError as e:
        OUT["python threads made"] = f"{made}, then {e}"
        raise OSError(errno.EAGAIN, str(e))
    finally:
        stop.set()
        for t in threading.enumerate():
            if t is not threading.main_thread():
                t.join()
    OUT["python threads made"] = str(made)
    return made
attempt("python thread bomb", python_thread_bomb)
attempt("raw clone(CLONE_THREAD) bomb", raw_clone_bomb)
''',
}


def program(name: str, host_pid: int) -> str:
    return PRELUDE.format(host=host_pid, numbers=syscall_numbers()) + ATTACKS[name] + "\nprint(json.dumps(OUT))\n"


def outcomes(output: str) -> dict[str, str]:
    """The program's JSON line (the last line of its output)."""
    return json.loads(output.strip().splitlines()[-1])


def successes(result) -> dict[str, str]:
    """What worked: variants reported as GOT, or the whole program if it did not report."""
    if not result.ok:
        return {"program": f"did not finish: {result.error} {result.output[-300:]}"}
    return {k: v for k, v in outcomes(result.output).items() if v.startswith("GOT")}


def snapshot(dirs=WATCHED_DIRS) -> set[str]:
    """Paths directly inside ``dirs``: compared before and after a call to find what it left."""
    names = set()
    for d in dirs:
        try:
            names |= {os.path.join(d, n) for n in os.listdir(d)}
        except OSError:
            pass
    return names
