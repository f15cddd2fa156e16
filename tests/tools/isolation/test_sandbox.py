"""The sandbox's layers one by one, including how unsafe mode degrades when namespaces or
seccomp are unavailable (as in an unprivileged container)."""

import os
import shutil
import struct
import tempfile

import pytest

from spark_jax.tools.isolation.child.sandbox_main import compile_with_echo
from spark_jax.tools.isolation.sandbox import processes_of_uid, run_python
from spark_jax.tools.isolation.sandbox_types import SandboxSettings
from spark_jax.tools.isolation.seccomp import compile_filter

# These tests compare host-wide SysV IPC tables and /tmp before and after; others here create host
# IPC objects on purpose (unsafe mode). One xdist worker runs them all (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("host_sysv_ipc")

ROOT = os.geteuid() == 0


def _run(code, *, disable=(), timeout=3.0):
    # Leaving layers off is only possible in unsafe mode; strict mode refuses (test_strict_*).
    mode = "unsafe" if disable else "strict"
    return run_python(code, timeout, SandboxSettings(disable=tuple(disable), mode=mode), prefork=False)


def test_seccomp_program_is_well_formed():
    prog = compile_filter()
    assert len(prog) % 8 == 0 and len(prog) // 8 < 4096
    insns = [struct.unpack("HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    returns = {k for code, _jt, _jf, k in insns if code == 0x06}
    assert 0x7FFF0000 in returns and 0x00050001 in returns  # allow, and EPERM as the default
    assert 0x80000000 in returns  # other ABIs kill the process
    n = len(insns)
    for i, (code, jt, jf, _k) in enumerate(insns):
        if code & 0x07 == 0x05:  # jumps stay inside the program
            assert i + 1 + max(jt, jf) < n


def test_echo_of_last_expression():
    body, echo = compile_with_echo("a = 2\na + 3")
    assert echo is not None
    body, echo = compile_with_echo("print(1)\nx = 3")
    assert echo is None


@pytest.mark.skipif(not ROOT, reason="uid separation needs root")
def test_runs_under_a_fresh_unprivileged_uid():
    outcome = _run("import os\nprint(os.getuid(), os.geteuid(), os.getgroups())")
    assert outcome.ok, outcome.stderr
    uid, euid, groups = outcome.stdout.split(maxsplit=2)
    assert int(uid) == int(euid) == outcome.uid and int(uid) != 0
    assert groups.strip() == "[]"


@pytest.mark.parametrize("disable", [(), ("namespaces",), ("namespaces", "seccomp")])
def test_writes_outside_workdir_never_persist(disable, tmp_path):
    target = "/tmp/spark_sbx_probe_{}".format("_".join(disable) or "all")
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"fd = libc.open({target.encode()!r}, 0o101, 0o644)\n"
        "print('fd', fd)\n"
        f"open({target!r}, 'w')"
    )
    outcome = _run(code, disable=disable)
    assert not outcome.ok
    assert "writing outside the working directory is not allowed" in outcome.stderr
    if isinstance(outcome.layers["uid"], int):
        # Blocked by the mount namespace, or created by the sandbox uid and swept after.
        assert not os.path.exists(target)
    else:
        # Documented gap: without a separate uid (not root, or root whose Python another
        # uid cannot read) and without namespaces only the audit hook stands, and a raw libc
        # write gets through.
        assert outcome.layers["uid"].startswith("off: ")
        if os.path.exists(target):
            os.unlink(target)


@pytest.mark.parametrize("disable", [(), ("namespaces",), ("seccomp",)])
def test_fork_bomb_is_contained(disable):
    """Refused by seccomp; without it, the PID namespace (or RLIMIT_NPROC) bounds it and the
    host kills all of it."""
    if "seccomp" in disable and not ROOT:
        pytest.skip("without root there is no per-uid RLIMIT_NPROC: a real fork bomb would run")
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None)\nn = 0\n"
        "for _ in range(2000):\n    if libc.fork() == 0:\n        n += 1\nimport time\ntime.sleep(10)"
    )
    outcome = _run(code, disable=disable, timeout=2.0)
    assert not outcome.ok
    if outcome.uid is not None:
        assert processes_of_uid(outcome.uid) == []
    if "seccomp" in disable:  # forks happened; RLIMIT_NPROC bounded them
        assert "RLIMIT_NPROC" in outcome.layers["rlimits"] or outcome.layers.get("pidns") == "on"


def test_network_namespace_blocks_loopback_even_without_seccomp():
    outcome = _run(
        "import ctypes, socket\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\nprint('fd', fd)\n"
        "s = socket.socket(fileno=fd) if fd >= 0 else None\n"
        "print(s.connect_ex(('127.0.0.1', 22)) if s else 'no socket')",
        disable=("seccomp",),
    )
    layers = outcome.layers or {}
    if layers.get("netns") != "on":
        pytest.skip(f"network namespaces unavailable here: {layers.get('netns')}")
    # The audit hook refuses the Python-level socket object; the raw fd reaches nothing.
    assert "network access is disabled" in outcome.stderr or "101" in outcome.stdout


def test_workdir_is_bounded():
    outcome = _run("with open('f', 'wb') as f:\n    f.write(b'0' * (200 * 1024 * 1024))")
    assert not outcome.ok
    assert outcome.returncode != 0


@pytest.mark.skipif(not ROOT, reason="creating files for another uid needs root")
def test_sweep_removes_only_the_sandbox_uids_files(tmp_path):
    from spark_jax.tools.isolation.sandbox_cleanup import sweep_world_writable as _sweep_world_writable

    uid = 65000
    shared = tempfile.mkdtemp(prefix="spark_sbx_shared_", dir="/tmp")
    try:
        os.chmod(shared, 0o1777)  # a world-writable directory below /tmp
        mine = os.path.join(shared, "left_by_sandbox")
        theirs = os.path.join(shared, "someone_elses")
        top = "/tmp/spark_sbx_left_at_top"
        for path in (mine, theirs, top):
            open(path, "w").close()
        os.chown(mine, uid, uid)
        os.chown(top, uid, uid)
        removed = _sweep_world_writable(uid)
        assert set(removed) >= {mine, top}
        assert not os.path.exists(mine) and not os.path.exists(top) and os.path.exists(theirs)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        if os.path.exists("/tmp/spark_sbx_left_at_top"):
            os.unlink("/tmp/spark_sbx_left_at_top")


def test_closing_its_pipes_does_not_stretch_the_time_limit():
    import time

    start = time.perf_counter()
    outcome = _run("import os\nos.close(1)\nos.close(2)\nwhile True:\n    pass", timeout=1.0)
    assert outcome.timed_out and not outcome.ok
    # The margin covers interpreter start-up on a loaded two-core CI machine.
    assert time.perf_counter() - start < 1.0 + 4.0


def test_a_warm_worker_idle_past_the_setup_allowance_still_runs(monkeypatch):
    """A prefork worker is ready long before it is used; CI once failed a python call because
    its READY line sat unread in the pipe past the setup deadline ("exited during setup")."""
    import time

    from spark_jax.tools.isolation import sandbox

    monkeypatch.setattr(sandbox, "_SETUP_TIMEOUT_S", 1.0)
    pool = sandbox.SandboxPool(SandboxSettings(), prefork=True)
    try:
        assert pool.take().run("print(1)", 5.0).ok  # leaves a warm worker behind
        time.sleep(2.0)
        outcome = pool.take().run("print(6 * 7)", 5.0)
        assert outcome.ok, outcome.setup_error
        assert outcome.stdout.strip() == "42"
    finally:
        pool.close()


def test_without_a_pid_namespace_the_program_may_signal_no_one():
    """Unsafe mode without namespaces: the host is visible, so the filter drops kill and co."""
    code = (f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print(libc.kill({os.getpid()}, 0), ctypes.get_errno(), libc.kill(1, 0), ctypes.get_errno())")
    outcome = _run(code, disable=("namespaces",))
    assert outcome.ok, outcome.stderr
    assert outcome.layers["seccomp"] == "on"
    assert outcome.stdout.split() == ["-1", "1", "-1", "1"]


@pytest.mark.skipif(not ROOT, reason="creating IPC objects for another uid needs root")
def test_ipc_objects_of_a_sandbox_uid_are_removed():
    import subprocess
    import sys

    from spark_jax.tools.isolation.sandbox_cleanup import remove_ipc_of_uid, sysv_ipc_objects

    uid, before = 2_099_999_123, sysv_ipc_objects()
    make = (f"import ctypes, os\nos.setresgid({uid}, {uid}, {uid})\nos.setresuid({uid}, {uid}, {uid})\n"
            "libc = ctypes.CDLL(None)\n"
            "assert min(libc.shmget(0, 4096, 0o1000 | 0o600), libc.msgget(0, 0o1000 | 0o600),"
            " libc.semget(0, 1, 0o1000 | 0o600)) >= 0")
    try:
        subprocess.run([sys.executable, "-c", make], check=True, cwd="/")
        assert len(sysv_ipc_objects() - before) == 3
    finally:
        removed = remove_ipc_of_uid(uid)
    assert sorted(r.split()[0] for r in removed) == ["msg", "sem", "shm"]
    assert sysv_ipc_objects() == before
