"""What ``spark-jax plan`` and ``spark-jax train`` tell a user: the architecture and device a
config names, the plan as a table, and the config changes that would make it fit."""

from __future__ import annotations

import json
import pathlib

from spark_jax.core.config_io import load_config
from spark_jax.model.config import PRESETS, LlamaConfig, preset
from spark_jax.plan.devices import DEVICES, device_key, device_memory_gb
from spark_jax.plan.memory import USABLE_FRACTION, plan_memory
from spark_jax.rl.config import TrainConfig

# HF model names (lower-case substrings of the model path) -> architecture preset.
_KNOWN_MODELS = (("llama-3.1-8b", "llama3_1_8b"), ("llama3_1_8b", "llama3_1_8b"), ("llama-3.2-1b", "llama3_2_1b"),
                 ("llama3_2_1b", "llama3_2_1b"), ("smollm2-135m", "smollm2_135m"), ("smollm2_135m", "smollm2_135m"))


def resolve_arch(model: str, arch: str | None):
    """The LlamaConfig of ``arch`` or, without it, of the config's ``model``."""
    name = arch or model
    if name in PRESETS:
        return preset(name)
    if str(name).lower() in ("embedded", "smollm2"):
        return preset("smollm2_135m")
    path = pathlib.Path(name).expanduser()
    cfg_file = path / "config.json" if path.is_dir() else path
    if cfg_file.is_file() and cfg_file.suffix == ".json":
        return LlamaConfig.from_hf(json.loads(cfg_file.read_text()), source=str(cfg_file))
    lowered = str(name).lower()
    for pattern, key in _KNOWN_MODELS:
        if pattern in lowered:
            return preset(key)
    raise ValueError(f"cannot tell the architecture of model {name!r}: give --arch (a preset such as "
                     f"llama3_1_8b, or an HF directory with config.json)")


def resolve_device(cfg, device: str | None, memory_gb: float | None) -> tuple[str, float]:
    """(device key, memory GB per device)."""
    key = (device or cfg.hardware.device or "").lower()
    if not key:
        import jax  # deferred: starting jax's backends costs seconds that `--device` avoids

        key = device_key(jax.devices()[0].device_kind) or jax.devices()[0].device_kind
    if key != "cpu" and key not in DEVICES:
        mapped = device_key(key)
        key = mapped or key
    mem = memory_gb or cfg.hardware.device_memory_gb or device_memory_gb(key)
    if not mem:
        raise ValueError(f"unknown device {key!r}: known are cpu, {', '.join(DEVICES)}; or give --device-memory-gb")
    return key, float(mem)


def suggestions(cfg, arch, budget: float, device: str = "") -> list[str]:
    """Changes that bring the peak under ``budget`` bytes on ``device`` (each on its own), best
    first; if none does alone, every change that lowers the peak."""
    d, f, t = cfg.mesh_shape
    n = d * f * t
    candidates = []
    if not cfg.remat:
        candidates.append(("enable remat (remat=true)", ["remat=true"]))
    if f < n:
        candidates.append((f"raise fsdp: mesh_shape=[1,{n},1] shards weights and batch over all {n} devices",
                           [f"mesh_shape=[1,{n},1]"]))
    if cfg.lora.rank > 0 and not cfg.lora.qlora:
        candidates.append(("use qlora (lora.qlora=true): NF4 base weights", ["lora.qlora=true"]))
    if cfg.lora.rank == 0:
        candidates.append(("use LoRA instead of full fine-tuning (lora.rank=16 full_finetune=false)",
                           ["lora.rank=16", "full_finetune=false"]))
    if cfg.param_dtype == "float32" or cfg.dtype == "float32":
        candidates.append(("use bfloat16 (param_dtype=bfloat16 dtype=bfloat16)",
                           ["param_dtype=bfloat16", "dtype=bfloat16"]))
    micro = cfg.batch_size // cfg.grad_accum
    if micro > 1 and cfg.batch_size % (cfg.grad_accum * 2) == 0:
        candidates.append((f"lower the micro-batch: grad_accum={cfg.grad_accum * 2} (same batch_size)",
                           [f"grad_accum={cfg.grad_accum * 2}"]))
    if cfg.batch_size > 1:
        half = max(cfg.batch_size // 2, cfg.grad_accum)
        if half % cfg.grad_accum == 0 and half < cfg.batch_size:
            candidates.append((f"lower batch_size to {half}", [f"batch_size={half}"]))
    if len(cfg.seq_buckets) > 1:
        shorter = list(cfg.seq_buckets[:-1])
        candidates.append((f"drop the longest sequence bucket: seq_buckets={shorter} (longer records lose prompt "
                           "tokens from the left)", [f"seq_buckets={shorter}"]))
    base = plan_memory(cfg, arch, device).peak
    fits, helps = [], []
    for text, overrides in candidates:
        try:
            alt = load_config(TrainConfig, base=cfg, overrides=overrides)
        except Exception:  # noqa: BLE001 - a candidate the config rejects is simply not offered
            continue
        peak = plan_memory(alt, arch, device).peak
        if peak <= budget:
            fits.append((peak, text))
        elif peak < base:
            helps.append((peak, text))
    return [t for _, t in sorted(fits, reverse=True)] or [t for _, t in sorted(helps)]


def _gb(x: float) -> str:
    return f"{x / 1e9:8.3f}"


def format_plan(plan, cfg, arch, device: str, memory_gb: float) -> str:
    lines = [
        f"model: {arch.num_params() / 1e9:.3f}B parameters ({arch.num_layers} layers, d={arch.hidden_size}, "
        f"vocab {arch.vocab_size}); trainable {plan.trainable_params / 1e6:.2f}M "
        f"({'full fine-tuning' if cfg.lora.rank == 0 else ('QLoRA NF4' if cfg.lora.qlora else 'LoRA') + f' rank {cfg.lora.rank}'})",
        f"mesh (data, fsdp, tensor) = {tuple(cfg.mesh_shape)}: {plan.devices} device(s) of {device}, "
        f"{memory_gb:g} GB each; param {cfg.param_dtype}, compute {cfg.dtype}, remat {cfg.remat}",
        f"batch {cfg.batch_size} = {cfg.grad_accum} micro-batch(es) of {cfg.batch_size // cfg.grad_accum}; "
        f"{plan.rows_per_device:g} row(s) per device per micro-batch",
        f"tokens per step: {plan.tokens_per_step} (batch x longest bucket); per device per micro-batch: "
        f"{plan.tokens_per_micro_batch_per_device:g}",
        "",
        "per device (GB = 1e9 bytes)             GB",
        f"  base weights (frozen)          {_gb(plan.base_weights)}",
        f"  trainable weights / adapters   {_gb(plan.trainable)}",
        f"  optimizer (AdamW mu, nu)       {_gb(plan.optimizer)}",
        f"  KL reference copy              {_gb(plan.reference)}",
        f"  gradients (accum + micro)      {_gb(plan.gradients)}",
        "",
        "  bucket   activations  no remat     remat   batch  ref logp     total",
    ]
    for b in plan.buckets:
        lines.append(f"  {b.seq:6d} {_gb(b.activations)}  {_gb(b.activations_no_remat)} {_gb(b.activations_remat)}"
                     f" {_gb(b.batch_arrays)}  {_gb(b.reference_logprobs)} {_gb(b.total)}")
    if cfg.remat and not plan.remat_counted:
        lines.append(f"  remat is on, but {device} counts the activations without it: XLA's CPU buffer assignment "
                     "does not shrink under jax.checkpoint")
    if any(b.header_block for b in plan.buckets):
        lines.append(f"  each row grows by its ten-header block (candidate objective or metrics): "
                     f"+{plan.buckets[-1].header_block} tokens at the longest bucket, counted in the activations")
    if any(b.reference_logprobs for b in plan.buckets):
        lines.append("  ref logp: the reference's float32 log-softmax at the action positions of the whole batch "
                     "(ppo.kl_estimator full)")
    lines += [
        "",
        f"  KV cache to decode {cfg.batch_size} rows x {max(cfg.seq_buckets)} tokens (Stage 1 / eval, not in "
        f"training): {plan.kv_cache / 1e9:.3f} GB per device",
        f"peak {plan.peak / 1e9:.3f} GB of {memory_gb * USABLE_FRACTION:.3f} GB usable "
        f"({USABLE_FRACTION:.0%} of {memory_gb:g} GB)",
    ]
    return "\n".join(lines)
