"""Two CPU processes joined by jax.distributed (coordinator on 127.0.0.1) train the tiny config
together through `spark-jax train` and match one process training on the same global batches."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from spark_jax.core.config_io import load_config
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.export import load_trained_policy
from spark_jax.rl.trainer import Trainer

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = ROOT / "configs" / "tiny.yaml"
STEPS = 3
# Two buckets: batches whose rows live in different processes must still agree on one length.
OVERRIDES = ["seq_buckets=[128,256]", f"steps={STEPS}", f"checkpoint.every={STEPS}", "batch_size=4",
             "grad_accum=2", "checkpoint.async_save=false"]
TIMING = {"tokens_per_s", "records_per_s", "step_time_s"}
# float32; the 2-process step reduces gradients across processes (gloo), the reference within one
# device, so sums run in another order: differences of a few ulps, far below 1e-5.
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lora_params(run_dir) -> dict[str, np.ndarray]:
    policy, _, _ = load_trained_policy(run_dir)
    from flax import nnx

    state = nnx.state(policy, nnx.LoRAParam)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(state)}


def test_two_processes_train_like_one(tiny_model_dir, stage1_run, tmp_path):
    out_mp = tmp_path / "two_processes"
    port = _free_port()
    cmd = [sys.executable, "-m", "spark_jax.cli", "train", "--config", str(CONFIG), "--data", str(stage1_run),
           "--model", str(tiny_model_dir), "--out", str(out_mp), "--no-progress", "mesh_shape=[2,1,1]", *OVERRIDES]
    procs = []
    for pid in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), "XLA_FLAGS": "",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": str(pid)}
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    # Only process 0 reports: the summary line, metrics.jsonl and TensorBoard.
    assert json.loads(outputs[0][0].strip().splitlines()[-1])["step"] == STEPS
    assert not [ln for ln in outputs[1][0].splitlines() if ln.startswith("{")]  # (gloo prints its own lines)
    rows_mp = [json.loads(x) for x in (out_mp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_mp] == list(range(1, STEPS + 1))

    # The reference: this (single-device) process, the same config on a one-device mesh.
    cfg = load_config(TrainConfig, CONFIG, [f"model={tiny_model_dir}", f"data={stage1_run}", *OVERRIDES])
    out_one = tmp_path / "one_process"
    ref = Trainer(cfg, out_one)
    try:
        rows_one = ref.run(progress=False)
    finally:
        ref.close()
    shapes = {r["tokens"] for r in rows_one}
    for a, b in zip(rows_one, rows_mp):
        for k in a:
            if k in TIMING or a[k] is None:
                continue
            np.testing.assert_allclose(b[k], a[k], rtol=TOL, atol=TOL, err_msg=f"step {a['step']} {k}")
    assert len(shapes) > 1  # the batches really differ from step to step

    # The checkpoint written collectively by both processes restores to the reference's weights.
    p_one, p_mp = _lora_params(out_one), _lora_params(out_mp)
    assert p_one.keys() == p_mp.keys() and p_one
    moved = 0.0
    for k in p_one:
        np.testing.assert_allclose(p_mp[k], p_one[k], rtol=TOL, atol=TOL, err_msg=k)
        moved = max(moved, float(np.abs(p_one[k]).max()))
    assert moved > 0
