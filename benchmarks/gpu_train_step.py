"""PPO train-step throughput and MFU of a Llama-3.1-8B-shaped model (random weights, no download)
with LoRA and with QLoRA, on whatever accelerator jax sees (H100/H200, TPU), sharded FSDP over
all local devices. One JSON line per mode, then one with the QLoRA/LoRA ratios measured in this run.

One PPO step (spark_jax.rl.steps) = a forward pass for the old and reference log-probs
(adapters on and off) + ``ppo_epochs`` forward+backward updates, over ``grad_accum`` micro-batches.

MFU = model FLOPs per step / step time / peak dense bf16 FLOP/s of the device (table in
spark_jax.plan.devices; unknown device, e.g. CPU: null). Model FLOPs per step use the standard
convention, N = parameters doing matmuls (all but the input embedding table):
    ``mfu``     (2 * 2N [two forwards] + ppo_epochs * 6N [forward + backward]) * tokens
``mfu_hw`` counts what LoRA really computes: the backward needs activation gradients (2N) but no
frozen-weight gradients, so an update is 4N (+ the adapters' own, negligible at rank 16):
    ``mfu_hw``  (2 * 2N + ppo_epochs * 4N) * tokens
Attention's T^2 FLOPs are left out of both (about 6% at 2048 tokens for 8B), so both understate.

    python benchmarks/gpu_train_step.py                      # 8B shape, 32 layers, bf16, remat
    python benchmarks/gpu_train_step.py --layers 8 --batch 8 --seq 1024
    python benchmarks/gpu_train_step.py --small               # tiny model on CPU, seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spark_jax.core.jax_setup import configure_gpu  # noqa: E402

configure_gpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from spark_jax.core.config_io import load_config  # noqa: E402
from spark_jax.data.pipeline import action_arrays, batch_shapes  # noqa: E402
from spark_jax.model.config import llama3_1_8b, tiny  # noqa: E402
from spark_jax.model.factory import init_model  # noqa: E402
from spark_jax.model.sharding import batch_sharding, make_mesh, replicated, state_shardings  # noqa: E402
from spark_jax.plan.devices import device_key, peak_flops  # noqa: E402
from spark_jax.rl.config import TrainConfig  # noqa: E402
from spark_jax.rl.optim import lr_schedule, make_optimizer  # noqa: E402
from spark_jax.rl.steps import BATCH_KEYS, init_state, make_train_step  # noqa: E402
from spark_jax.rl.trainer import build_models, split_trainable  # noqa: E402


def make_batch(vocab: int, b: int, t: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token rows, every key of ``BATCH_KEYS``: each row holds one action span (S = 1),
    its second half (the targets of positions t // 2 - 1 .. t - 2, as the pipeline predicts a
    span's tokens from the position before each)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(b, t + 1)).astype(np.int32)
    a = t - t // 2
    loss_mask = np.zeros((b, t), np.float32)
    loss_mask[:, t // 2 - 1:t - 1] = 1.0
    positions, action_mask = action_arrays(loss_mask, a)
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "attention_mask": np.ones((b, t), np.int32),
             "action_positions": positions, "action_mask": action_mask,
             "action_span": np.zeros((b, a), np.int32),
             "span_start": np.full((b, 1), t // 2 - 1, np.int32), "span_mask": np.ones((b, 1), np.float32),
             "span_return": rng.random((b, 1)).astype(np.float32),
             "span_reward": rng.random((b, 1)).astype(np.float32),
             "span_kind": np.zeros((b, 1), np.int32), "span_step": np.zeros((b, 1), np.int32)}
    shapes = batch_shapes(b, t, a, 1, header_len=1)
    for k, (shape, dtype) in shapes.items():  # no judged candidates, no header block
        batch.setdefault(k, np.zeros(shape, dtype))
    assert set(batch) == set(BATCH_KEYS) == set(shapes)
    for k, v in batch.items():
        assert (v.shape, v.dtype) == shapes[k], (k, v.shape, v.dtype, shapes[k])
    return batch


def matmul_params(arch) -> int:
    """Parameters that take part in matmuls: everything but the input embedding table (a tied
    embedding still does the output projection, so it counts once)."""
    return arch.num_params() - (0 if arch.tie_word_embeddings else arch.vocab_size * arch.hidden_size)


def model_flops_per_step(n: int, tokens: int, ppo_epochs: int, *, frozen_weight_grads: bool = True) -> float:
    """Two forward passes (old and reference log-probs, 2N per token each) and ``ppo_epochs``
    updates at 6N per token (standard) or 4N (LoRA: no gradients for frozen weights)."""
    return (2 * 2 * n + ppo_epochs * (6 if frozen_weight_grads else 4) * n) * tokens


def run_mode(mode: str, args, arch, mesh) -> dict:
    overrides = [
        f"batch_size={args.batch}", f"grad_accum={args.grad_accum}", f"seq_buckets=[{args.seq}]",
        f"param_dtype={args.param_dtype}", f"dtype={args.dtype}", f"remat={str(args.remat).lower()}",
        f"mesh_shape={list(mesh.devices.shape)}", f"lora.rank={args.rank}", f"lora.alpha={2.0 * args.rank}",
        f"lora.qlora={'true' if mode == 'qlora' else 'false'}", f"ppo.ppo_epochs={args.ppo_epochs}",
        f"steps={args.steps + 1}",
        # the benchmark's rows hold no judged states: time the step without the header block
        "candidates.metrics=false", "ppo.surrogate=ppo",
    ]
    cfg = load_config(TrainConfig, None, overrides)
    base = init_model(arch.replace(param_dtype=cfg.param_dtype, dtype=cfg.dtype), seed=0, mesh=mesh)
    policy, _ = build_models(cfg, base)
    del base
    graphdef, p_train, p_frozen = split_trainable(policy, cfg)
    total = cfg.steps * cfg.updates_per_step
    optimizer = make_optimizer(cfg.optim, total)
    frozen = jax.device_put({"policy": p_frozen}, state_shardings({"policy": p_frozen}, mesh))
    state = init_state({"policy": p_train}, optimizer)
    state_sh = state_shardings(state, mesh)
    state = jax.device_put(state, state_sh)
    bsh = batch_sharding(mesh, (cfg.batch_size,))
    step = jax.jit(make_train_step(cfg, graphdef, None, optimizer, lr_schedule(cfg.optim, total)),
                   in_shardings=(state_sh, state_shardings(frozen, mesh), None, {k: bsh for k in BATCH_KEYS}),
                   out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))
    batch = {k: jax.device_put(v, bsh) for k, v in make_batch(arch.vocab_size, cfg.batch_size, args.seq).items()}

    t0 = time.perf_counter()
    state, metrics = step(state, frozen, None, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, metrics = step(state, frozen, None, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    dt = float(np.median(times))
    tokens = cfg.batch_size * args.seq
    n = matmul_params(arch)
    key = device_key(jax.devices()[0].device_kind)
    peak = peak_flops(key)
    peak_total = None if peak is None else peak * mesh.devices.size
    flops_6n = model_flops_per_step(n, tokens, cfg.ppo.ppo_epochs)
    flops_hw = model_flops_per_step(n, tokens, cfg.ppo.ppo_epochs, frozen_weight_grads=False)
    mem = None
    try:
        stats = jax.devices()[0].memory_stats() or {}
        mem = stats.get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001 - CPU has no memory stats
        pass
    return {
        "benchmark": "ppo_train_step", "mode": mode, "device": jax.devices()[0].device_kind,
        "device_key": key, "devices": int(mesh.devices.size), "mesh": list(mesh.devices.shape),
        "layers": arch.num_layers, "hidden": arch.hidden_size, "params": arch.num_params(), "matmul_params": n,
        "lora_rank": args.rank, "batch": cfg.batch_size, "grad_accum": cfg.grad_accum, "seq": args.seq,
        "ppo_epochs": cfg.ppo.ppo_epochs, "param_dtype": cfg.param_dtype, "dtype": cfg.dtype, "remat": cfg.remat,
        "steps_timed": args.steps, "compile_s": compile_s, "step_time_s": dt, "best_step_time_s": min(times),
        "tokens_per_step": tokens, "tokens_per_s": tokens / dt,
        "tokens_per_s_per_device": tokens / dt / mesh.devices.size,
        "model_tflops_per_step": flops_6n / 1e12,
        "mfu": None if peak_total is None else flops_6n / dt / peak_total,
        "mfu_hw": None if peak_total is None else flops_hw / dt / peak_total,
        "peak_bytes_in_use_device0": mem, "loss": float(metrics["loss"]),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="the tiny test model on CPU-sized shapes (CI)")
    p.add_argument("--layers", type=int, default=32, help="decoder layers of the 8B shape (32 = the real model)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one compiling step)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--param-dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--no-remat", dest="remat", action="store_false")
    p.add_argument("--modes", default="lora,qlora", help="comma-separated: lora, qlora")
    args = p.parse_args(argv)
    if args.small:
        arch = tiny()
        args.batch, args.grad_accum, args.seq, args.steps, args.rank = 4, 2, 64, 2, 4
        args.param_dtype = args.dtype = "float32"
    else:
        arch = llama3_1_8b(num_layers=args.layers)
    n = len(jax.devices())
    mesh = make_mesh((1, n, 1), jax.devices())
    rows = []
    for mode in args.modes.split(","):
        if mode not in ("lora", "qlora"):
            p.error(f"unknown mode {mode!r}")
        rows.append(run_mode(mode, args, arch, mesh))
        print(json.dumps(rows[-1]), flush=True)
    by = {r["mode"]: r for r in rows}
    if "lora" in by and "qlora" in by:
        print(json.dumps({"benchmark": "ppo_train_step_ratio", "device": by["lora"]["device"],
                          "qlora_over_lora_step_time": by["qlora"]["step_time_s"] / by["lora"]["step_time_s"],
                          "qlora_over_lora_tokens_per_s": by["qlora"]["tokens_per_s"] / by["lora"]["tokens_per_s"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
