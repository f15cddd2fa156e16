"""A host process for test_sandbox_rootless.py, run as ``python -m tests.tools.isolation.sandbox_probe
PHASE`` (typically under ``unshare --user --map-user=1000 --map-group=1000``, or ``tests.tools.isolation.plain_user``, a real
non-root host).
Prints one JSON report on its last line.

PHASE "attacks": every attack class of tests/tools/isolation/attacks.py through run_tool, plus the secret,
IPC and file checks, sympy and a runaway host-side tool. PHASE "root-without-cap-sys-admin":
the same after making unshare() without CLONE_NEWUSER fail, as for a root in a container.
PHASE "no-namespaces": first makes unshare() fail in this process and its children (as Docker's
default seccomp profile does), then reports what python and sympy answer in strict mode, and
python in unsafe mode. PHASE "kernel-root": a host whose kernel uid is 0 behind a user namespace.
PHASE "eagain": the host's own fork fails with EAGAIN (a low RLIMIT_NPROC), then recovers.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time

SECRET = "sk-test-DO-NOT-LEAK-rootless"


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def deny_unshare(but_user_namespaces: bool = False) -> None:
    """A seccomp filter on this process and its children: unshare() fails with EPERM (with
    ``but_user_namespaces``, only without CLONE_NEWUSER: a root lacking CAP_SYS_ADMIN)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x7FFF0000)
    nr = lib.seccomp_syscall_resolve_name(b"unshare")
    if but_user_namespaces:  # arg0 & CLONE_NEWUSER == 0
        cmp = (_ArgCmp * 1)(_ArgCmp(0, 7, 0x10000000, 0))
        assert lib.seccomp_rule_add_array(ctx, 0x00050001, nr, 1, cmp) == 0
    else:
        assert lib.seccomp_rule_add_array(ctx, 0x00050001, nr, 0, None) == 0
    assert lib.seccomp_load(ctx) == 0


def attacks_phase(report: dict) -> None:
    from spark_jax.tools import ToolsConfig, configure, run_tool
    from spark_jax.tools.isolation.sandbox_cleanup import WORKDIR_PREFIX, sysv_ipc_objects
    from tests.tools.isolation import attacks
    from tests.tools.isolation.worker_tools import RunawayTool

    configure(ToolsConfig(sandbox_prefork=False))
    ipc, files = sysv_ipc_objects(), attacks.snapshot()
    found, leaked = {}, []
    for name in attacks.ATTACKS:
        r = run_tool("python", attacks.program(name, os.getpid()), timeout_s=20)
        found.update({f"{name}: {k}": v for k, v in attacks.successes(r).items()})
        if SECRET in r.output + (r.error or ""):
            leaked.append(name)
    report["attacks_that_worked"] = found
    report["leaked"] = leaked
    report["new_ipc_objects"] = sorted(sysv_ipc_objects() - ipc)
    # Only this host's working directories: pytest's other workers run sandboxes of their own in /tmp.
    own_workdirs = f"{WORKDIR_PREFIX}{os.getpid()}-"
    report["new_files"] = sorted(p for p in attacks.snapshot() - files if "pwned" in p or own_workdirs in p)
    report["sympy"] = run_tool("sympy", "solve(x**2 - 4, x)").output
    assert run_tool("calculator", "1 + 1").ok  # a warm worker: its start-up is not the call's time
    start = time.perf_counter()
    r = RunawayTool(ToolsConfig()).run("30000000", 1.0)
    report["runaway"] = [r.error, round(time.perf_counter() - start, 2)]
    report["dumpable"] = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)


def no_namespaces_phase(report: dict) -> None:
    deny_unshare()
    from spark_jax.tools import ToolsConfig, configure, run_tool

    report["python"] = run_tool("python", "print(1)").error
    report["sympy"] = run_tool("sympy", "x + x").error
    configure(ToolsConfig(sandbox_mode="unsafe"))
    r = run_tool("python", "print(6 * 7)")
    report["unsafe"] = [r.ok, r.output]


def kernel_root_phase(report: dict) -> None:
    """A host whose kernel uid is 0 but that looks like uid 1000 (``unshare --user
    --map-user=1000``): strict mode refuses; unsafe mode keeps /proc and keyrings contained."""
    from spark_jax.tools import ToolsConfig, configure, run_tool
    from spark_jax.tools.isolation.sandbox import sandbox_layers
    from spark_jax.tools.isolation.sandbox_types import SandboxSettings
    from tests.tools.isolation import attacks

    configure(ToolsConfig(sandbox_prefork=False))
    report["python"] = run_tool("python", "print(1)").error
    report["layers"] = sandbox_layers(SandboxSettings(mode="unsafe"))
    configure(ToolsConfig(sandbox_prefork=False, sandbox_mode="unsafe"))
    found = {}
    for name in ("proc_kernel", "keyring"):
        r = run_tool("python", attacks.program(name, os.getpid()), timeout_s=20)
        found.update({f"{name}: {k}": v for k, v in attacks.successes(r).items()})
    report["attacks_that_worked"] = found


def eagain_phase(report: dict) -> None:
    """Real host pressure: RLIMIT_NPROC (soft) just above what this uid runs, so that the host's
    own fork (and thread start) fails with EAGAIN; run_tool must answer, then recover."""
    import resource
    import subprocess

    from spark_jax.tools import ToolsConfig, configure, run_tool

    configure(ToolsConfig(sandbox_prefork=False))
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (2, hard))
    try:
        squeezed = {tool: run_tool(tool, arg) for tool, arg in (("units", "1 m to cm"), ("python", "print(6 * 7)"))}
        try:
            subprocess.run(["true"], check=True)
            report["host_spawn_while_squeezed"] = "ok"
        except OSError as e:
            report["host_spawn_while_squeezed"] = f"{type(e).__name__}: {e}"
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
    report["squeezed"] = {k: [r.ok, r.error] for k, r in squeezed.items()}
    report["after"] = {tool: [r.ok, r.output] for tool, r in
                       (("units", run_tool("units", "1 m to cm")), ("python", run_tool("python", "print(6 * 7)")))}


def main() -> None:
    os.environ["OPENAI_API_KEY"] = SECRET
    report = {"euid": os.geteuid()}
    from spark_jax.tools.isolation.sandbox import sandbox_layers

    if sys.argv[1] in ("attacks", "root-without-cap-sys-admin"):
        if sys.argv[1] != "attacks":
            deny_unshare(but_user_namespaces=True)
        report["layers"] = sandbox_layers()
        attacks_phase(report)
    elif sys.argv[1] == "kernel-root":
        kernel_root_phase(report)
    elif sys.argv[1] == "eagain":
        eagain_phase(report)
    else:
        no_namespaces_phase(report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
