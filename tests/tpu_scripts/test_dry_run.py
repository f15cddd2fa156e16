"""tpu_scripts print the exact gcloud commands under --dry-run, and refuse bad flags."""

from __future__ import annotations

import pathlib
import shlex
import subprocess

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[2] / "tpu_scripts"


def dry(script, *args):
    proc = subprocess.run(["bash", str(SCRIPTS / script), "--dry-run", *args], capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, [shlex.split(line) for line in proc.stdout.splitlines()], proc.stderr


def test_create_on_demand_slice():
    rc, cmds, _ = dry("create.sh", "--name", "spark", "--zone", "us-east5-b", "--accelerator", "v5litepod-8")
    assert rc == 0
    assert cmds == [["gcloud", "compute", "tpus", "tpu-vm", "create", "spark", "--zone=us-east5-b",
                     "--accelerator-type=v5litepod-8", "--version=v2-alpha-tpuv5-lite"]]


def test_create_queued_spot_with_project():
    rc, cmds, _ = dry("create.sh", "--name", "spark", "--zone", "us-east1-d", "--accelerator", "v6e-8",
                      "--project", "my-proj", "--queued", "--spot", "--valid-for", "6h")
    assert rc == 0
    create = cmds[0]
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    for flag in ("--node-id=spark", "--project=my-proj", "--runtime-version=v2-alpha-tpuv6e", "--spot",
                 "--valid-until-duration=6h", "--accelerator-type=v6e-8"):
        assert flag in create


def test_setup_copies_checkout_and_installs_jax_tpu_on_all_workers():
    rc, cmds, _ = dry("setup.sh", "--name", "spark", "--zone", "z")
    assert rc == 0
    assert cmds[0][:2] == ["git", "-C"] and "archive" in cmds[0]
    assert "--worker=all" in cmds[1] and cmds[1][3] == "tpu-vm" and cmds[1][4] == "scp"
    ssh = cmds[2]
    assert "--worker=all" in ssh
    command = next(a for a in ssh if a.startswith("--command="))
    assert "pip install -q -e '.[tpu]'" in command


def test_launch_runs_the_same_command_everywhere_with_distributed_env():
    rc, cmds, _ = dry("launch.sh", "--name", "spark", "--zone", "z", "--", "train", "--algo", "ppo",
                      "--data", "gs://bucket/stage 1")
    assert rc == 0
    (ssh,) = cmds
    assert "--worker=all" in ssh
    command = next(a for a in ssh if a.startswith("--command="))[len("--command="):]
    assert "SPARK_JAX_DISTRIBUTED=1" in command
    remote = shlex.split(command.split(".venv/bin/spark-jax", 1)[1].split(">", 1)[0])
    assert remote == ["train", "--algo", "ppo", "--data", "gs://bucket/stage 1"]


def test_logs_and_teardown():
    rc, cmds, _ = dry("logs.sh", "--name", "spark", "--zone", "z", "--worker", "3")
    assert rc == 0 and "--worker=3" in cmds[0]
    rc, cmds, _ = dry("teardown.sh", "--name", "spark", "--zone", "z", "--queued")
    assert rc == 0 and cmds[0][3:5] == ["queued-resources", "delete"] and "--force" in cmds[0]


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("create.sh", ["--accelerator", "v9-8"], "unknown accelerator type"),
        ("create.sh", ["--name", "Bad_Name"], "lower-case"),
        ("launch.sh", ["--name", "spark"], "give the spark-jax command"),
        ("teardown.sh", ["--bogus"], "unexpected arguments"),
    ],
)
def test_bad_flags_are_refused(script, args, message):
    rc, _, err = dry(script, *args)
    assert rc == 2 and message in err
