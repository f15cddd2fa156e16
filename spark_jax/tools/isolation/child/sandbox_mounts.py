"""Child side: the sandbox's file system, a fresh root with nothing of the host's that Python
does not need. Standard library only: this source runs inside the sandbox (see sandbox_main).

In a new mount namespace a small tmpfs becomes the root. It holds read-only binds of /usr (and
the merged-/usr links), the Python installation and the dynamic loader's /etc files; the
null/zero/full/random/urandom devices; a fresh /proc (the new PID namespace's, so only the
sandbox's own process) that shows nothing of the kernel's (``subset=pid``: no /proc/sys,
/proc/keys, /proc/sysrq-trigger, ...) or, where the kernel lacks that option, masks them as
container runtimes do; an empty read-only /tmp; and a size-limited tmpfs working directory
``WORKDIR``. ``pivot_root`` then detaches the host's tree: home directories, the repository,
the host's /tmp and /dev/shm, sockets and other processes' /proc entries do not exist for the
program, and nothing it writes lands on a host file system. When the process exits, the
namespace and both tmpfs go with it, whatever happened to the host.
"""

import ctypes
import os
import platform

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

WORKDIR = "/sandbox"
STAGING = "/tmp"  # an existing directory; the new root is mounted over it in our namespace only
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
DEVICES = ("null", "zero", "full", "random", "urandom")
PROC_OPTIONS = "subset=pid,hidepid=invisible"  # Linux 5.8+: only processes, only visible ones
# Without subset=pid: what runc (Docker's default) masks or makes read-only, and more of the
# kernel's interfaces. Files are covered by /dev/null, directories by an empty read-only tmpfs.
PROC_MASKED = ("acpi", "asound", "bus", "driver", "dynamic_debug", "fs", "irq", "keys",
               "key-users", "kallsyms", "kcore", "kmsg", "kpagecgroup", "kpagecount",
               "kpageflags", "latency_stats", "scsi", "sched_debug", "sysrq-trigger",
               "timer_list", "timer_stats", "tty", "config.gz", "modules", "pressure", "mtrr")
PROC_READ_ONLY = ("sys",)


def mount(libc, source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or source or ''} on {target}: {os.strerror(err)}")


def _locked_flags(fd: int) -> int:
    """Flags of the source mount that a bind remount must repeat: in a user namespace the
    kernel refuses to clear noexec or change the atime mode of a mount inherited from outside."""
    st = os.fstatvfs(fd).f_flag
    keep = 0
    for st_bit, ms_bit in ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                           (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if st & st_bit:
            keep |= ms_bit
    if not st & (os.ST_NOATIME | os.ST_RELATIME):
        keep |= MS_STRICTATIME
    return keep


def _outermost(paths) -> list:
    """Real paths, without those inside another one of the list or inside /usr."""
    real = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})
    kept = []
    for p in real:
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept + ["/usr"]):
            kept.append(p)
    return kept


def plan_root(expose) -> list:
    """What the new root holds: (path, "dir"|"file"|"device", O_PATH fd) and (path, "link", target).

    Sources are opened before anything is mounted over them (a Python installation may sit
    below STAGING, as a venv in a CI clone under /tmp does)."""
    items = []

    def hold(path, kind):
        items.append((path, kind, os.open(path, os.O_PATH | os.O_CLOEXEC)))

    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            items.append((d, "link", os.readlink(d)))
        elif os.path.isdir(d):
            hold(d, "dir")
    for p in _outermost(expose):
        hold(p, "dir")
    for p in ETC_ENTRIES:
        if os.path.islink(p):
            items.append((p, "link", os.readlink(p)))
        elif os.path.exists(p):
            hold(p, "dir" if os.path.isdir(p) else "file")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            hold("/dev/" + name, "device")
    return items


def _passwd(uid: int, gid: int) -> tuple:
    """Minimal passwd and group files, so that getpwuid() of the sandbox user works."""
    passwd = f"root:x:0:0:root:/:/bin/false\nsandbox:x:{uid}:{gid}:sandbox:{WORKDIR}:/bin/false\n"
    group = f"root:x:0:\nsandbox:x:{gid}:\n"
    return passwd, group


def _mask_proc(libc, proc: str) -> list:
    """Covers the kernel's interfaces in a full /proc mounted at ``proc``; returns the paths
    masked. Binds that inherit proc's locked flags (nosuid, nodev, noexec) repeat them."""
    masked = []
    for name in PROC_MASKED:
        path = f"{proc}/{name}"
        if os.path.islink(path) or not os.path.exists(path):
            continue
        if os.path.isdir(path):
            mount(libc, "tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=4k,nr_inodes=1,mode=0555")
        else:
            mount(libc, "/dev/null", path, None, MS_BIND)
        masked.append(name)
    for name in PROC_READ_ONLY:
        path = f"{proc}/{name}"
        mount(libc, path, path, None, MS_BIND | MS_REC)
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            mount(libc, None, path, None, flags | _locked_flags(fd))
        finally:
            os.close(fd)
        masked.append(name + " (read-only)")
    return masked


def mount_proc(libc, target: str, fresh_proc: bool, subset: bool = True) -> str:
    """The sandbox's /proc at ``target``: with ``subset=pid`` where the kernel has it (and
    ``subset``), else a full one with the kernel's interfaces masked. Returns what was done."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    # A PID namespace's own /proc lists only its processes; without one, hidepid hides the rest.
    if subset:
        try:
            mount(libc, "proc", target, "proc", flags, PROC_OPTIONS)
            return f"proc ({PROC_OPTIONS})"
        except OSError:
            pass  # an older kernel: the masks below
    mount(libc, "proc", target, "proc", flags, None if fresh_proc else "hidepid=invisible")
    return "proc (masked: " + " ".join(_mask_proc(libc, target)) + ")"


def build_root(libc, expose, disk_mb: int, owner: tuple, shown: tuple, fresh_proc: bool,
               proc_subset: bool = True) -> list:
    """Builds the new root and pivots into it. ``owner``: (uid, gid) that owns the working
    directory, as this namespace maps it; ``shown``: the (uid, gid) the program will have.
    Returns a description of what was done, for the READY report."""
    machine = platform.machine()
    if machine not in SYS_PIVOT_ROOT:
        raise OSError(0, f"no pivot_root number for {machine}")
    mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    items = plan_root(expose)
    new = STAGING
    mount(libc, "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=2048,mode=0755")
    bound = []
    for path, kind, what in items:
        target = new + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if kind == "link":
            os.symlink(what, target)
            continue
        if kind == "dir":
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            open(target, "a").close()
        source = f"/proc/self/fd/{what}"
        mount(libc, source, target, None, MS_BIND | MS_REC)
        if kind != "device":  # writes to /dev/null must work; the others are read-only
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _locked_flags(what)
            mount(libc, None, target, None, flags)
            bound.append(path)
        os.close(what)
    os.makedirs(new + "/etc", mode=0o755, exist_ok=True)
    passwd, group = _passwd(*shown)
    for name, text in (("passwd", passwd), ("group", group)):
        with open(f"{new}/etc/{name}", "w") as f:
            f.write(text)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{new}/dev/{name}")
    os.makedirs(new + "/proc", mode=0o555)
    proc = mount_proc(libc, new + "/proc", fresh_proc, proc_subset)
    os.makedirs(new + "/tmp", mode=0o755, exist_ok=True)  # may hold a venv from a /tmp clone
    os.makedirs(new + WORKDIR, mode=0o700)
    mount(libc, "tmpfs", new + WORKDIR, "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={disk_mb}m,nr_inodes=4096,mode=0700,uid={owner[0]},gid={owner[1]}")
    os.makedirs(new + "/.oldroot")
    os.chdir(new)
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(SYS_PIVOT_ROOT[machine]), b".", b".oldroot") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    os.chdir("/")
    if libc.umount2(b"/.oldroot", MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"detaching the host's root: {os.strerror(err)}")
    os.rmdir("/.oldroot")
    mount(libc, None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return ["pivot_root", "read-only: " + " ".join(bound), proc, f"workdir {WORKDIR} ({disk_mb} MiB)"]
