"""LoRA train-step throughput on SmolLM2-135M: our jitted JAX step vs eager PyTorch + peft.

Both sides do the same work per step: forward, masked cross-entropy on the action tokens,
backward into rank-r adapters on all seven projections, one AdamW update. Prints one JSON
line with tokens/s of each, their ratio and a model-FLOPs-utilisation estimate:
MFU = 6 * N * tokens / step_time / peak, N = the base model's parameters (the usual
"model FLOPs"; LoRA skips the base weights' gradients, so the hardware does ~4N of the 6N),
peak = an fp32 2048^3 matmul measured in this run with jax. The two steps are timed
alternately (ours, PyTorch, ours, ...), so both see the same machine conditions.

    PYTHONPATH=. python benchmarks/train_step.py [--batch 2] [--seq 128] [--steps 2] [--rank 16]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from statistics import median

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import interleaved_times, ratio_spread  # this folder (run as a script)
from flax import nnx

from spark_jax.model.checkpoint_hf import gguf_cache_dir
from spark_jax.model.pretrained import embedded_model_path, load_pretrained
from spark_jax.rl.adapters import LoraConfig, apply_lora
from spark_jax.rl.ppo import token_logprobs
from spark_jax.rl.sft import sft_loss

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def measured_peak_flops(n: int = 2048, reps: int = 3) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        f(a).block_until_ready()
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def batch(vocab: int, b: int, t: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(b, t)).astype(np.int32)
    targets = np.roll(ids, -1, axis=1)
    mask = np.zeros((b, t), np.float32)
    mask[:, t // 2: t - 1] = 1.0  # the "action" half of each row
    return ids, targets, mask


def jax_step(args, ids, targets, mask):
    """(run one step, last loss, first-call seconds, base parameters) of our jitted step."""
    pm = load_pretrained("embedded", dtype="float32")
    model = apply_lora(pm.module, LoraConfig(rank=args.rank, alpha=2.0 * args.rank,
                                             target_modules=r".*(" + "|".join(TARGETS) + r")$"))
    graphdef, lora, frozen = nnx.split(model, nnx.LoRAParam, ...)
    opt = optax.adamw(1e-4)
    opt_state = opt.init(lora)

    def step(lora, opt_state, frozen, ids, targets, mask):
        def loss_fn(lora):
            logits, _ = nnx.merge(graphdef, lora, frozen)(ids)
            # the masked mean NLL, as the PyTorch side: weights = mask / mask.sum()
            return sft_loss(token_logprobs(logits, targets), mask / mask.sum())[0]

        loss, grads = jax.value_and_grad(loss_fn)(lora)
        updates, opt_state = opt.update(grads, opt_state, lora)
        return optax.apply_updates(lora, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    ids, targets, mask = map(jnp.asarray, (ids, targets, mask))
    carry = {"lora": lora, "opt_state": opt_state, "loss": None}

    def one_step():
        carry["lora"], carry["opt_state"], loss = step(carry["lora"], carry["opt_state"], frozen, ids, targets, mask)
        carry["loss"] = float(loss)  # waits for the step

    t0 = time.perf_counter()
    one_step()
    compile_s = time.perf_counter() - t0
    return one_step, lambda: carry["loss"], compile_s, pm.config.num_params()


def torch_step(args, ids, targets, mask):
    """(run one step, last loss, threads) of the eager PyTorch + peft step."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import LlamaForCausalLM

    hf_dir = gguf_cache_dir(embedded_model_path())
    model = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, PeftLoraConfig(r=args.rank, lora_alpha=2 * args.rank,
                                                 target_modules=TARGETS, lora_dropout=0.0))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids_t, tgt_t, mask_t = torch.tensor(ids).long(), torch.tensor(targets).long(), torch.tensor(mask)

    last = {"loss": None}

    def step():
        logits = model(input_ids=ids_t).logits
        logp = torch.log_softmax(logits.float(), -1).gather(-1, tgt_t[..., None])[..., 0]
        loss = -(logp * mask_t).sum() / mask_t.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last["loss"] = loss.item()

    return step, lambda: last["loss"], torch.get_num_threads()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rank", type=int, default=16)
    args = p.parse_args()
    ids, targets, mask = batch(49152, args.batch, args.seq)
    tokens = args.batch * args.seq
    peak = measured_peak_flops()
    jax_fn, jax_loss, compile_s, n_params = jax_step(args, ids, targets, mask)
    torch_fn, torch_loss, threads = torch_step(args, ids, targets, mask)
    jax_times, torch_times = interleaved_times(jax_fn, torch_fn, args.steps)
    j_best, j_med, t_best, t_med = min(jax_times), median(jax_times), min(torch_times), median(torch_times)
    j_loss, t_loss = jax_loss(), torch_loss()
    flops = 6 * n_params * tokens
    print(json.dumps({
        "benchmark": "train_step_lora_smollm2_135m", "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(), "torch_threads": threads, "batch": args.batch, "seq": args.seq,
        "lora_rank": args.rank, "steps_timed": args.steps,
        "jax_tokens_per_s": tokens / j_med, "jax_best_tokens_per_s": tokens / j_best,
        "torch_peft_tokens_per_s": tokens / t_med, "torch_best_tokens_per_s": tokens / t_best,
        "ratio_jax_over_torch": t_med / j_med, "ratio_best": t_best / j_best,
        "ratio_min_max": ratio_spread(jax_times, torch_times),
        "jax_compile_s": compile_s, "loss_jax": j_loss, "loss_torch": t_loss,
        "model_params": n_params, "flops_per_step_6N": flops,
        "measured_peak_fp32_gflops": peak / 1e9, "mfu_jax": flops / j_med / peak, "mfu_torch": flops / t_med / peak,
    }))


if __name__ == "__main__":
    main()
