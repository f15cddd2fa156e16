"""The non-root mode, run for real.

- A plain non-root host (kernel uid 1000, started by root through tests.tools.isolation.plain_user, which
  only makes the Python installation reachable for it) runs every attack class through the
  sandbox, which isolates itself with an unprivileged user namespace.
- A root that may not unshare() (a container without CAP_SYS_ADMIN) switches to a fresh uid
  before its user namespace where that uid can read Python, and is refused where it cannot.
- A host whose kernel uid is 0 behind a user namespace (``unshare --user --map-user=1000``) is
  refused in strict mode: a user namespace does not change the kernel uid that /proc/sys checks.
- A host where unshare() is denied gets "sandbox unavailable: ..." unless unsafe mode is chosen.
- A host whose own fork fails with EAGAIN gets ok=False from run_tool, then recovers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

# These tests compare host-wide SysV IPC tables and /tmp before and after; others here create host
# IPC objects on purpose (unsafe mode). One xdist worker runs them all (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("host_sysv_ipc")

REPO = str(pathlib.Path(os.path.abspath(__file__)).parents[3])  # the repository root
AS_KERNEL_ROOT_1000 = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
PLAIN_USER = [sys.executable, "-m", "tests.tools.isolation.plain_user", "1000", "--"]
ROOT_WITH_READABLE_PYTHON = [sys.executable, "-m", "tests.tools.isolation.plain_user", "0", "--"]


def _probe(phase: str, wrapper: list[str]) -> dict:
    out = subprocess.run([*wrapper, sys.executable, "-m", "tests.tools.isolation.sandbox_probe", phase],
                         cwd=REPO, capture_output=True, text=True, timeout=240,
                         env={**os.environ, "PYTHONPATH": REPO})
    if out.returncode == 77:  # tests.tools.isolation.plain_user: this host does not allow it
        pytest.skip(out.stderr.strip())
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def kernel_root_1000():
    """``unshare --user --map-user=1000``: uid 1000 in a user namespace, kernel uid unchanged."""
    if shutil.which("unshare") is None:
        pytest.skip("the unshare command (util-linux) is not installed")
    check = subprocess.run([*AS_KERNEL_ROOT_1000, "id", "-u"], capture_output=True, text=True)
    if check.returncode != 0 or check.stdout.strip() != "1000":
        pytest.skip(f"this host does not allow user namespaces for the test: {check.stderr.strip()}")
    return AS_KERNEL_ROOT_1000


@pytest.fixture(scope="module")
def plain_user():
    """The wrapper that runs a command as kernel uid 1000 (needs a root host)."""
    if os.geteuid() != 0:
        return []  # this host is a plain user already
    return PLAIN_USER


@pytest.mark.parametrize("phase", ["attacks", "root-without-cap-sys-admin"], ids=["plain-user", "root-without-unshare"])
def test_non_root_mode_contains_every_attack_class(phase, plain_user):
    """As a plain non-root host, and as a root that may not unshare() (a container without
    CAP_SYS_ADMIN), which switches to a fresh uid and takes the same user-namespace mode."""
    if phase != "attacks" and os.geteuid() != 0:
        pytest.skip("the root variant needs a root host")
    report = _probe(phase, plain_user if phase == "attacks" else ROOT_WITH_READABLE_PYTHON)
    assert report["euid"] == (1000 if phase == "attacks" and plain_user else 0)
    layers = report["layers"]
    assert layers["mode"] == "user-namespace", layers
    for key in ("userns", "mountns", "netns", "ipcns", "pidns", "seccomp", "no_new_privs", "keyring"):
        assert layers[key] == "on", (key, layers)
    assert "kernel_uid" not in layers
    assert "RLIMIT_NPROC 16 (own user namespace)" in layers["tasks"]
    assert any("subset=pid" in m for m in layers["mounts"]), layers["mounts"]
    assert layers["uid"] == "65534 (unmapped)" and layers["workdir"] == "/sandbox"
    assert report["attacks_that_worked"] == {}
    assert report["leaked"] == [] and report["new_ipc_objects"] == [] and report["new_files"] == []
    assert report["sympy"] == "[-2, 2]"
    error, seconds = report["runaway"]
    assert error.startswith("timed out after 1 s") and seconds < 2.0
    assert report["dumpable"] == 0


def test_root_without_unshare_is_refused_where_a_fresh_uid_cannot_read_python():
    """As this host's root, whose Python may sit under a directory only root can enter."""
    if os.geteuid() != 0:
        pytest.skip("needs a root host")
    from spark_jax.tools.isolation.child.sandbox_main import _closed_ancestor
    from spark_jax.tools.isolation.sandbox import _python_installation

    closed = next((p for p in _python_installation() if _closed_ancestor(p)), None)
    if closed is None:
        pytest.skip("this host's Python is readable by every user: the switch succeeds (tested above)")
    out = subprocess.run([sys.executable, "-c", (
        "from tests.tools.isolation.sandbox_probe import deny_unshare\n"
        "deny_unshare(but_user_namespaces=True)\n"
        "from spark_jax.tools import run_tool\n"
        "print(run_tool('python', 'print(1)').error)")],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    error = out.stdout.strip().splitlines()[-1]
    assert error.startswith("sandbox unavailable: user namespace: unshare(mount, net, ipc, pid): "
                            "Operation not permitted; the kernel uid of this process is 0"), error
    assert "not readable by other users" in error


def test_kernel_root_behind_a_user_namespace_is_refused(kernel_root_1000):
    """uid 1000 inside, kernel uid 0 outside: /proc/sys would be writable, so strict mode
    refuses; unsafe mode runs, with /proc and the keyrings still contained, and says that it
    has no task limit."""
    if os.geteuid() != 0:
        pytest.skip("the kernel uid is 0 only when this host is root")
    report = _probe("kernel-root", kernel_root_1000)
    assert report["euid"] == 1000
    assert report["python"].startswith(
        "sandbox unavailable: user namespace: the kernel uid of this process is 0 (root, shown as "
        "1000 in its user namespace)"), report["python"]
    layers = report["layers"]
    assert layers["mode"] == "unsafe" and layers["kernel_uid"].startswith("off: ")
    assert layers["tasks"].startswith("off: ")
    assert any("subset=pid" in m for m in layers["mounts"]), layers["mounts"]
    assert report["attacks_that_worked"] == {}


@pytest.mark.parametrize("as_root", [False, True], ids=["non-root", "root"])
def test_without_namespaces_strict_mode_refuses_and_unsafe_runs(as_root, plain_user):
    if as_root and os.geteuid() != 0:
        pytest.skip("the root variant needs a root host")
    report = _probe("no-namespaces", [] if as_root else plain_user)
    for tool in ("python", "sympy"):
        # root: unshare() without a user namespace, then a user namespace: both refused
        assert report[tool].startswith("sandbox unavailable: user namespace: unshare("), report[tool]
        assert "Operation not permitted" in report[tool] and "sandbox_mode='unsafe'" in report[tool]
    assert report["unsafe"] == [True, "42"]


def test_run_tool_answers_under_a_real_eagain_and_recovers(plain_user):
    """The host's fork fails with EAGAIN (RLIMIT_NPROC of a plain user): run_tool answers
    ok=False with the reason, never raises, and works again once processes can start."""
    report = _probe("eagain", plain_user)
    assert report["host_spawn_while_squeezed"].startswith("BlockingIOError"), report
    for tool, (ok, error) in report["squeezed"].items():
        assert not ok and ("Resource temporarily unavailable" in error or "can't start new thread" in error), (tool, error)
    assert report["after"] == {"units": [True, report["after"]["units"][1]], "python": [True, "42"]}
    assert report["after"]["units"][1].startswith("100 cm")
