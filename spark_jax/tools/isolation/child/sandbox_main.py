"""The sandbox's child side: confines its own process, then runs untrusted Python read from stdin.

sandbox.py starts ``python -I -c <loader> <settings-json> <sources-json>``; the loader executes
this file with sandbox_mounts and confine (this package: standard library only; the host
imports the same files in tests) and calls ``entry()``. The steps, each reported in the READY
line:

1. Die with the host (``PR_SET_PDEATHSIG``).
2. New mount, network, IPC and PID namespaces; without root, inside a new user namespace that
   maps only our own uid.
3. Fork: the child is PID 1 of the new PID namespace and runs the program; this process only
   waits for it and exits as it did.
4. A fresh root (sandbox_mounts): read-only system and Python, a tmpfs working directory, the
   namespace's own /proc, nothing else of the host.
5. rlimits: address space, file size, open files, CPU, no core files.
6. Identity: as root a fresh unprivileged uid; without root the overflow uid of a nested user
   namespace with no uid map and no capabilities. Never the kernel's uid 0 in a user namespace.
7. A task limit: RLIMIT_NPROC for the fresh uid or inside the nested user namespace (counted
   there alone), on top of the host's pids cgroup where it has one.
8. A fresh, empty session keyring.
9. ``no_new_privs``, then the seccomp allow list the host compiled (isolation.seccomp), on all
   threads.
10. An audit hook that refuses the same operations with readable messages.
11. Preloads, READY, then the program.

Mode "strict" needs every layer of steps 2-9 and otherwise stops with FAILED "unavailable: ...";
mode "unsafe" takes each layer this host allows and reports the others as "off: ...".
"""

import ast
import builtins
import ctypes
import json
import linecache
import os
import resource
import sys
import traceback

from spark_jax.tools.isolation.child.confine import (
    OVERFLOW_UID,
    Unavailable,
    apply_rlimits,
    die_with_parent,
    drop_to_uid,
    drop_to_unmapped_uid,
    enter_namespaces,
    fork_into_pid_namespace,
    install_audit_hook,
    join_fresh_session_keyring,
    limit_tasks,
    load_seccomp,
    no_new_privs,
    wait_for_cgroups,
)
from spark_jax.tools.isolation.child.sandbox_mounts import MNT_DETACH, STAGING, WORKDIR, build_root

READY = "SANDBOX-READY "
FAILED = "SANDBOX-FAILED "
UNAVAILABLE = "unavailable: "
SETUP_FAILED_EXIT = 97
MAX_CPU_S = 3600
INTERNAL_FILES = ("<string>", "<sandbox>")  # the loader and these modules, hidden in tracebacks


def compile_with_echo(source: str):
    """Compiles ``source``; a final bare expression's value is printed (as in a notebook)."""
    tree = ast.parse(source, filename="<tool>", mode="exec")
    echo = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop()
        echo = compile(ast.Expression(last.value), "<tool>", "eval")
    return compile(tree, "<tool>", "exec"), echo


def _format_user_error(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename not in INTERNAL_FILES]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames[-8:])
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def run_user_code(source: str) -> int:
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


def _closed_ancestor(path: str):
    """The highest directory above ``path`` that other users cannot enter, if any."""
    current = ""
    for part in os.path.realpath(path).split(os.sep)[1:-1]:
        current += os.sep + part
        if not os.stat(current).st_mode & 0o001:
            return current
    return None


def _require(strict: bool, layer: str, reason: str, layers: dict, key: str) -> None:
    if strict:
        raise Unavailable(layer, reason)
    layers[key] = "off: " + reason


def _file_system(libc, settings, entered, rootless, strict, layers) -> str:
    """The working directory: the new root's when it could be built, else the host's (unsafe)."""
    if "mounts" in settings["disable"] or "mount" not in entered:
        why = "disabled by settings" if "mounts" in settings["disable"] else "no mount namespace"
        _require(strict, "mounts", why, layers, "mounts")
    else:
        uid, gid = settings["uid"], settings["gid"]
        owner = (0, 0) if rootless else (uid, gid)
        shown = (OVERFLOW_UID, OVERFLOW_UID) if rootless else (uid, gid)
        try:
            layers["mounts"] = build_root(libc, settings["expose"], settings["disk_mb"], owner, shown,
                                          fresh_proc="pid" in entered,
                                          proc_subset="proc_subset" not in settings["disable"])
            return WORKDIR
        except OSError as e:
            _require(strict, "mounts", str(e), layers, "mounts")
            libc.umount2(STAGING.encode(), MNT_DETACH)  # uncover the host's workdir below it
    if not settings.get("workdir"):
        raise Unavailable("mounts", "no working directory")
    return settings["workdir"]


def _identity(libc, settings, rootless, strict, mounted, layers) -> bool:
    """Drops to the sandbox identity; returns whether the uid is one of our own."""
    if "identity" in settings["disable"]:
        _require(strict, "identity", "disabled by settings", layers, "uid")
        return False
    if rootless:
        if layers.get("userns") != "on":
            _require(strict, "identity", "no user namespace", layers, "uid")
            return False
        try:
            drop_to_unmapped_uid(libc)
        except Unavailable as e:
            _require(strict, "identity", str(e).split(": ", 1)[1], layers, "uid")
            return False
        layers["uid"] = f"{OVERFLOW_UID} (unmapped)"
        return True  # the nested user namespace is ours alone
    blocked = [] if mounted else [p for p in settings["expose"] if _closed_ancestor(p)]
    if blocked:  # without our own root the uid could not even read Python itself
        _require(strict, "identity", f"{blocked[0]} is not readable by other users", layers, "uid")
        return False
    drop_to_uid(settings["uid"], settings["gid"])
    layers["uid"] = settings["uid"]
    return True


def _task_limit(settings, rootless, exclusive, strict, layers) -> None:
    """RLIMIT_NPROC where the kernel counts it for the sandbox alone; with the host's pids
    cgroup (``settings["pids_cgroup"]``) as the other layer, strict mode needs one of them."""
    if "tasks" in settings["disable"]:
        _require(strict, "tasks", "disabled by settings", layers, "tasks")
        return
    count = settings["max_processes"]
    limits = [settings["pids_cgroup"]] if settings.get("pids_cgroup") else []
    if exclusive and "kernel_uid" not in layers and limit_tasks(count):  # not for kernel uid 0
        where = "own user namespace" if rootless else "fresh uid"
        limits.append(f"RLIMIT_NPROC {count} ({where})")
        layers["rlimits"].append("RLIMIT_NPROC")
    if limits:
        layers["tasks"] = " + ".join(limits)
    else:
        _require(strict, "tasks", "no pids cgroup and no uid or user namespace of our own for "
                 "RLIMIT_NPROC", layers, "tasks")


def main(settings: dict) -> int:
    sys.dont_write_bytecode = True
    libc = ctypes.CDLL(None, use_errno=True)
    strict = settings["mode"] == "strict"
    settings.setdefault("disable", [])
    die_with_parent(libc, settings["host_pid"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    wait_for_cgroups(settings.get("cgroups") or ())
    layers: dict = {}
    entered: set = set()
    rootless = os.geteuid() != 0
    if "namespaces" in settings["disable"]:
        _require(strict, "namespaces", "disabled by settings", layers, "namespaces")
    else:
        entered, userns = enter_namespaces(
            libc, strict, layers, settings["uid"], settings["gid"],
            lambda: next((p for p in settings["expose"] if _closed_ancestor(p)), None))
        rootless = rootless or userns  # a root that may not unshare gets the non-root mode
    layers["mode"] = ("user-namespace" if rootless else "root") if strict else "unsafe"
    if "pid" in entered:
        fork_into_pid_namespace(libc)
    workdir = _file_system(libc, settings, entered, rootless, strict, layers)
    mounted = workdir == WORKDIR

    applied, limits = apply_rlimits(settings)
    layers["rlimits"] = applied
    own = _identity(libc, settings, rootless, strict, mounted, layers)
    _task_limit(settings, rootless, own, strict, layers)
    die_with_parent(libc, None if "pid" in entered else settings["host_pid"])
    if "keyring" in settings["disable"]:
        _require(strict, "keyring", "disabled by settings", layers, "keyring")
    else:
        try:
            join_fresh_session_keyring(libc)
            layers["keyring"] = "on"
        except Unavailable as e:
            _require(strict, "keyring", str(e).split(": ", 1)[1], layers, "keyring")
    os.chdir(workdir)
    os.umask(0o077)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    layers["workdir"] = workdir

    nnp = no_new_privs(libc)
    layers["no_new_privs"] = "on" if nnp else "off"
    # Without a PID namespace of its own the program must not signal anyone: the host is visible.
    program = bytes.fromhex(settings.get("seccomp" if "pid" in entered else "seccomp_no_signals") or "")
    if "seccomp" in settings["disable"]:
        _require(strict, "seccomp", "disabled by settings", layers, "seccomp")
    elif not program:
        _require(strict, "seccomp", settings.get("seccomp_error") or "no filter", layers, "seccomp")
    elif not nnp:
        _require(strict, "seccomp", "no_new_privs unavailable", layers, "seccomp")
    else:
        try:
            load_seccomp(libc, program)
            layers["seccomp"] = "on"
        except Unavailable as e:
            _require(strict, "seccomp", str(e).split(": ", 1)[1], layers, "seccomp")
    install_audit_hook(workdir)
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


def _fail(text: str) -> None:
    sys.stdout.write(FAILED + text + "\n")
    sys.stdout.flush()
    os._exit(SETUP_FAILED_EXIT)


def entry() -> None:
    """The program's entry point (called by the loader)."""
    try:
        settings = json.loads(sys.argv[1])
    except (IndexError, ValueError) as e:
        _fail(f"bad settings: {e}")
    try:
        code = main(settings)
    except Unavailable as e:
        _fail(UNAVAILABLE + str(e))
    except BaseException as e:  # noqa: BLE001 - setup failure: report and stop
        _fail(f"{type(e).__name__}: {e}")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    os._exit(code)
