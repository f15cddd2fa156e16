"""optax AdamW with warmup + cosine decay and global-norm clipping."""

from __future__ import annotations

import optax

from spark_jax.rl.config import OptimConfig


def lr_schedule(cfg: OptimConfig, total_updates: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_updates - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=cfg.lr / (warmup + 1), peak_value=cfg.lr, warmup_steps=warmup,
        decay_steps=max(total_updates, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio,
    )


def make_optimizer(cfg: OptimConfig, total_updates: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr_schedule(cfg, total_updates), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                    weight_decay=cfg.weight_decay),
    )
