"""The sandbox's kernel-facing layers, each alone: /proc (subset=pid, or masks), the kernel-uid
check of the user-namespace mode, the task limit (pids cgroup and RLIMIT_NPROC) and the fresh
session keyring. The attack programs are in tests/tools/isolation/attacks.py; the non-root modes run them
in test_sandbox_rootless.py. Nothing here changes a sysctl: a write only writes back the value
already there, and the thread bombs stop at 400 tasks."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from spark_jax.tools.isolation import sandbox_cgroup
from spark_jax.tools.isolation.child.confine import kernel_uid_is_root
from spark_jax.tools.isolation.sandbox import Worker, run_python
from spark_jax.tools.isolation.sandbox_types import SandboxSettings
from tests.tools.isolation import attacks

ROOT = os.geteuid() == 0
REPO = str(pathlib.Path(os.path.abspath(__file__)).parents[3])  # the repository root


def _attack(name: str, settings: SandboxSettings):
    outcome = run_python(attacks.program(name, os.getpid()), 20.0, settings, prefork=False)
    assert outcome.ok, (outcome.error_message(20.0), outcome.stderr[-2000:])
    return attacks.outcomes(outcome.stdout), outcome.layers


def _host_can_spawn() -> None:
    assert subprocess.run(["true"], timeout=10).returncode == 0
    assert run_python("print(6 * 7)", 10.0, SandboxSettings(), prefork=False).stdout == "42\n"


def test_proc_shows_only_processes():
    outcome = run_python("import os\nprint(sorted(os.listdir('/proc')))", 10.0, SandboxSettings(), prefork=False)
    assert outcome.ok, outcome.error_message(10.0)
    assert any(m.startswith("proc (subset=pid") for m in outcome.layers["mounts"]), outcome.layers
    assert outcome.stdout.strip() == "['1', 'self', 'thread-self']"


@pytest.mark.parametrize("attack", ["proc_kernel", "keyring"])
def test_without_subset_pid_the_masks_hold(attack):
    """A kernel without ``subset=pid`` gets a full /proc with the kernel's interfaces masked."""
    found, layers = _attack(attack, SandboxSettings(disable=("proc_subset",)))
    assert any(m.startswith("proc (masked: ") and "sys (read-only)" in m for m in layers["mounts"]), layers
    assert {k: v for k, v in found.items() if v.startswith("GOT")} == {}
    if attack == "proc_kernel":  # readable, but the write is refused, not missing
        assert found["write printk_ratelimit_burst"] in ("refused: EROFS", "refused: EACCES"), found


def test_the_masked_proc_is_really_masked_without_seccomp_and_identity():
    """As root with seccomp and the uid drop left off (unsafe mode), only the masks stand
    between the program and the kernel's files: the read-only /proc/sys refuses even root."""
    if not ROOT:
        pytest.skip("needs root: without it the kernel refuses the writes anyway")
    settings = SandboxSettings(mode="unsafe", disable=("proc_subset", "seccomp", "identity"))
    found, layers = _attack("proc_kernel", settings)
    assert layers["uid"].startswith("off") and layers["seccomp"].startswith("off")
    assert {k: v for k, v in found.items() if v.startswith("GOT")} == {}, found
    assert found["write printk_ratelimit_burst"] == "refused: EROFS"


def test_kernel_uid_zero_is_recognised(tmp_path):
    mine = tmp_path / "mine"
    mine.write_text("")
    assert kernel_uid_is_root(str(mine))  # owned by our own uid: what kernel root looks like
    assert kernel_uid_is_root(str(tmp_path / "missing"))  # cannot tell: assume the worst
    if ROOT:
        os.chown(mine, 4242, 4242)
        assert not kernel_uid_is_root(str(mine))
    assert kernel_uid_is_root() == (ROOT and open("/proc/self/uid_map").read().split()[:2] == ["0", "0"])


_KEYRING_HOST = r'''
import ctypes, json, sys
from spark_jax.tools.isolation.sandbox import run_python
from spark_jax.tools.isolation.sandbox_types import SandboxSettings
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
# This host's own session keyring, with one key in it (as a login session would have).
assert libc.syscall(250, 1, b"spark-test-session") > 0, ctypes.get_errno()  # JOIN_SESSION_KEYRING
assert libc.syscall(248, b"user", b"spark-test-key", b"secret", 6, -3) > 0, ctypes.get_errno()  # add_key
PROGRAM = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(256)
n = libc.syscall(250, 6, -3, buf, 256)  # KEYCTL_DESCRIBE the session keyring
size = libc.syscall(250, 11, -3, None, 0)  # KEYCTL_READ: 4 bytes per key in it
keys = open("/proc/keys").read() if MASKED else ""
print(buf.value.decode().rsplit(";", 1)[1] if n > 0 else "errno %d" % ctypes.get_errno(), size, "spark-test-key" in keys)
"""
out = {}
for name, disable in (("fresh", ("seccomp",)), ("inherited", ("seccomp", "keyring")),
                      ("masked", ("seccomp", "keyring", "proc_subset"))):
    program = PROGRAM.replace("MASKED", str(name == "masked"))
    o = run_python(program, 10.0, SandboxSettings(mode="unsafe", disable=disable), prefork=False)
    out[name] = o.stdout.strip() or o.error_message(10.0)
print(json.dumps(out))
'''


def test_the_program_has_a_fresh_empty_session_keyring():
    """keyctl is refused by seccomp; with seccomp off (unsafe mode) the session keyring the
    program sees is a new, empty one, not the host's with its key (which it sees with the
    layer left off too), and the masked /proc/keys lists nothing."""
    if os.uname().machine != "x86_64":
        pytest.skip("the programs use x86_64's keyctl numbers")
    out = subprocess.run([sys.executable, "-c", _KEYRING_HOST], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["fresh"] == "_ses 0 False", report
    assert report["inherited"] == "spark-test-session 4 False", report
    assert report["masked"].endswith("False"), report


def test_strict_mode_refuses_without_a_task_limit_or_keyring():
    for layer in ("tasks", "keyring"):
        outcome = run_python("print(1)", 5.0, SandboxSettings(disable=(layer,)), prefork=False)
        assert outcome.error_message(5.0).startswith(f"sandbox unavailable: {layer}: disabled by settings")


def _bomb(settings: SandboxSettings) -> tuple[dict, dict]:
    found, layers = _attack("thread_bomb", settings)
    _host_can_spawn()
    return found, layers


def test_thread_bomb_is_bounded_by_both_limits():
    found, layers = _bomb(SandboxSettings())
    assert {k: v for k, v in found.items() if v.startswith("GOT")} == {}, found
    made = int(found["raw clone threads made"].split(",")[0]) if os.uname().machine == "x86_64" else 0
    assert made < SandboxSettings().max_processes, found
    if ROOT:
        assert "RLIMIT_NPROC 16 (fresh uid)" in layers["tasks"]


def test_the_pids_cgroup_alone_bounds_a_thread_bomb_of_the_kernel_root():
    """The program left as root (unsafe mode, no uid drop): RLIMIT_NPROC does not count for
    the kernel's uid 0, so only pids.max stands."""
    parent, kind = sandbox_cgroup.pids_parent()
    if parent is None:
        pytest.skip(f"no pids cgroup on this host: {kind}")
    if not ROOT:
        pytest.skip("needs root to leave the program as root")
    found, layers = _bomb(SandboxSettings(mode="unsafe", disable=("identity",)))
    assert layers["tasks"] == f"pids cgroup {kind} (pids.max 17)", layers
    assert {k: v for k, v in found.items() if v.startswith("GOT")} == {}, found


def test_without_a_task_limit_the_bomb_gets_through():
    """The attack program can fail: with the task limit left off (unsafe mode) it makes all of
    its (bounded) 400 threads; the host can still start processes afterwards."""
    if os.uname().machine != "x86_64":
        pytest.skip("the raw clone variant is x86_64 machine code")
    found, layers = _bomb(SandboxSettings(mode="unsafe", disable=("tasks",)))
    assert layers["tasks"] == "off: disabled by settings"
    assert found["raw clone(CLONE_THREAD) bomb"] == "GOT: 400", found


def test_a_worker_sits_in_its_pids_cgroup_and_both_go():
    parent, kind = sandbox_cgroup.pids_parent()
    if parent is None:
        pytest.skip(f"no pids cgroup on this host: {kind}")
    worker = Worker(SandboxSettings(max_processes=8))
    cgroup = worker.cgroup if kind == "v2" and worker.cgroup is not None else worker.pids_cgroup
    try:
        assert open(os.path.join(cgroup.path, "pids.max")).read().strip() == "9"
        assert str(worker.proc.pid) in open(os.path.join(cgroup.path, "cgroup.procs")).read().split()
    finally:
        worker.destroy()
    assert not os.path.exists(cgroup.path)
