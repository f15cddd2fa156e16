"""benchmarks/gpu_train_step.py runs small on CPU and reports its figures as JSON lines."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_train_step.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_train_step", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_small_mode_runs_on_cpu_and_reports_lora_and_qlora():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--small"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    modes = {r["mode"]: r for r in rows if r["benchmark"] == "ppo_train_step"}
    assert set(modes) == {"lora", "qlora"}
    for r in modes.values():
        assert r["device"] == "cpu" and r["mfu"] is None  # no peak FLOP/s for a CPU: MFU is not made up
        assert r["tokens_per_s"] > 0 and r["step_time_s"] > 0 and math.isfinite(r["loss"])
        assert r["tokens_per_step"] == r["batch"] * r["seq"]
    ratio = next(r for r in rows if r["benchmark"] == "ppo_train_step_ratio")
    assert ratio["qlora_over_lora_step_time"] > 0


def test_flop_convention():
    mod = _module()
    from spark_jax.model.config import llama3_1_8b

    arch = llama3_1_8b()
    n = mod.matmul_params(arch)
    assert n == arch.num_params() - 128256 * 4096  # the input embedding does no matmul
    assert 6.9e9 < n < 7.6e9
    # 2 forwards (2N each) + 2 updates (6N each) per token
    assert mod.model_flops_per_step(n, 10, 2) == 16 * n * 10
    assert mod.model_flops_per_step(n, 10, 2, frozen_weight_grads=False) == 12 * n * 10
