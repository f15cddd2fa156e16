"""The per-worker cgroup v2 memory limit: where a host delegates the memory controller, and, on
such a host, a worker really inside its limited cgroup."""

from __future__ import annotations

import os

import pytest

from spark_jax.tools.isolation import sandbox_cgroup
from spark_jax.tools.isolation.sandbox import Worker
from spark_jax.tools.isolation.sandbox_types import SandboxSettings


def _tree(tmp_path, controllers: str, subtree: str):
    own = tmp_path / "service"
    own.mkdir()
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text(subtree + "\n")
    return str(tmp_path), "/service"


def test_no_memory_controller_is_named(tmp_path):
    parent, why = sandbox_cgroup.find_memory_parent(*_tree(tmp_path, "cpu hugetlb", ""))
    assert parent is None and "no memory controller" in why and "cpu hugetlb" in why


def test_a_delegated_memory_controller_is_used(tmp_path):
    mount, own = _tree(tmp_path, "cpu memory pids", "memory pids")
    parent, why = sandbox_cgroup.find_memory_parent(mount, own)
    assert (parent, why) == (os.path.join(mount, "service"), "ok")
    assert sandbox_cgroup.find_memory_parent(None, None)[1] == "no cgroup v2 hierarchy mounted"


def test_our_cgroup_names_are_parsed(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "35 28 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/x\n0::/user.slice/app.scope\n")
    assert sandbox_cgroup._cgroup2_mount(str(mountinfo)) == "/sys/fs/cgroup"
    assert sandbox_cgroup._own_cgroup(str(cgroup)) == "/user.slice/app.scope"


def test_a_worker_runs_inside_its_memory_limit():
    parent, why = sandbox_cgroup.memory_parent()
    if parent is None:
        pytest.skip(f"this host delegates no cgroup v2 memory controller: {why}")
    worker = Worker(SandboxSettings(memory_mb=256, disk_mb=16))
    try:
        assert worker.cgroup is not None
        limit = int(open(os.path.join(worker.cgroup.path, "memory.max")).read())
        assert limit == (256 + 16 + 128) * 1024 * 1024
        procs = open(os.path.join(worker.cgroup.path, "cgroup.procs")).read().split()
        assert str(worker.proc.pid) in procs
    finally:
        worker.destroy()
    assert not os.path.exists(worker.cgroup.path)


def test_pids_controller_v2_first_then_v1(tmp_path):
    for name in ("v2", "v2b"):
        (tmp_path / name).mkdir()
    v2, own = _tree(tmp_path / "v2", "cpu memory pids", "")
    parent, kind = sandbox_cgroup.find_pids_parent(v2, own, None, None)
    assert (parent, kind) == (os.path.join(v2, "service"), "v2")
    assert open(os.path.join(parent, "cgroup.subtree_control")).read() == "+pids"  # enabled for children
    v2_without, own = _tree(tmp_path / "v2b", "cpu memory", "")
    (tmp_path / "v1" / "job").mkdir(parents=True)
    parent, kind = sandbox_cgroup.find_pids_parent(v2_without, own, str(tmp_path / "v1"), "/job")
    assert (parent, kind) == (str(tmp_path / "v1" / "job"), "v1")
    parent, why = sandbox_cgroup.find_pids_parent(v2_without, own, None, None)
    assert parent is None and "no pids controller" in why and "no cgroup v1 pids hierarchy" in why


def test_the_v1_pids_hierarchy_is_found(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    )
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("8:pids:/job\n4:memory:/x\n0::/\n")
    assert sandbox_cgroup._cgroup1_mount("pids", str(mountinfo)) == "/sys/fs/cgroup/pids"
    assert sandbox_cgroup._own_cgroup(str(cgroup), controller="pids") == "/job"
    assert sandbox_cgroup._own_cgroup(str(cgroup)) == "/"


def test_the_worker_waits_until_it_is_in_its_cgroups(tmp_path):
    from spark_jax.tools.isolation.child.confine import Unavailable, wait_for_cgroups

    cgroup = tmp_path / "cgroup"
    cgroup.write_text("8:pids:/spark-sbx-1-2\n0::/\n")
    wait_for_cgroups(["spark-sbx-1-2"], cgroup_file=str(cgroup))
    wait_for_cgroups([], cgroup_file=str(cgroup))
    with pytest.raises(Unavailable, match="not moved into cgroups"):
        wait_for_cgroups(["spark-sbx-1-3"], timeout_s=0.05, cgroup_file=str(cgroup))


def test_a_sandbox_worker_is_in_its_pids_cgroup_before_it_forks():
    """PID 1, which the worker forks during its setup, is counted in the same pids cgroup."""
    import time

    parent, kind = sandbox_cgroup.pids_parent()
    if parent is None:
        pytest.skip(f"no pids cgroup on this host: {kind}")
    worker = Worker(SandboxSettings())
    cgroup = worker.cgroup if kind == "v2" and worker.cgroup else worker.pids_cgroup
    try:
        deadline = time.monotonic() + 30
        while worker.inner_pid is None and time.monotonic() < deadline:
            worker.ready()  # reads what setup printed so far; the PID line comes first
            worker._setup_line()
            time.sleep(0.01)
        procs = open(os.path.join(cgroup.path, "cgroup.procs")).read().split()
        assert str(worker.proc.pid) in procs and str(worker.inner_pid) in procs, procs
    finally:
        worker.destroy()
