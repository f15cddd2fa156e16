"""The non-root mode, run for real: a host process that is not root (uid 1000 in a user
namespace, ``unshare --user --map-user=1000 --map-group=1000``) runs every attack class through
the sandbox, which then isolates itself with an unprivileged user namespace. And the refusal:
a host where unshare() is denied gets "sandbox unavailable: ..." unless unsafe mode is chosen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AS_NON_ROOT = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]


def _probe(phase: str, wrapper: list[str]) -> dict:
    out = subprocess.run([*wrapper, sys.executable, "-m", "tests.tools.sandbox_probe", phase],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def non_root():
    """The wrapper that makes a non-root host here, or a skip naming what the host lacks."""
    if shutil.which("unshare") is None:
        pytest.skip("the unshare command (util-linux) is not installed")
    check = subprocess.run([*AS_NON_ROOT, "id", "-u"], capture_output=True, text=True)
    if check.returncode != 0 or check.stdout.strip() != "1000":
        pytest.skip(f"this host does not allow user namespaces for the test: {check.stderr.strip()}")
    return AS_NON_ROOT


@pytest.mark.parametrize("phase", ["attacks", "root-without-cap-sys-admin"], ids=["non-root", "root-without-unshare"])
def test_non_root_mode_contains_every_attack_class(phase, non_root):
    """As a non-root host, and as a root that may not unshare() (a container without
    CAP_SYS_ADMIN), which falls back to the same user-namespace mode."""
    if phase != "attacks" and os.geteuid() != 0:
        pytest.skip("the root variant needs a root host")
    report = _probe(phase, non_root if phase == "attacks" else [])
    assert report["euid"] == (1000 if phase == "attacks" else 0)
    layers = report["layers"]
    assert layers["mode"] == "user-namespace", layers
    for key in ("userns", "mountns", "netns", "ipcns", "pidns", "seccomp", "no_new_privs"):
        assert layers[key] == "on", (key, layers)
    assert layers["uid"] == "65534 (unmapped)" and layers["workdir"] == "/sandbox"
    assert report["attacks_that_worked"] == {}
    assert report["leaked"] == [] and report["new_ipc_objects"] == [] and report["new_files"] == []
    assert report["sympy"] == "[-2, 2]"
    error, seconds = report["runaway"]
    assert error.startswith("timed out after 1 s") and seconds < 2.0
    assert report["dumpable"] == 0


@pytest.mark.parametrize("as_root", [False, True], ids=["non-root", "root"])
def test_without_namespaces_strict_mode_refuses_and_unsafe_runs(as_root, non_root):
    if as_root and os.geteuid() != 0:
        pytest.skip("the root variant needs a root host")
    report = _probe("no-namespaces", [] if as_root else non_root)
    layer = "namespaces" if as_root else "user namespace"
    for tool in ("python", "sympy"):
        assert report[tool].startswith(f"sandbox unavailable: {layer}: unshare("), report[tool]
        assert "Operation not permitted" in report[tool] and "sandbox_mode='unsafe'" in report[tool]
    assert report["unsafe"] == [True, "42"]
