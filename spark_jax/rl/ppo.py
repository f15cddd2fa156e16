"""Offline step-wise PPO losses: clipped surrogate + KL to the frozen reference (+ entropy).

Pure functions of arrays, jit- and grad-friendly. Shapes: B rows (step records), T tokens,
V vocabulary. ``mask_bt`` is 1 on action tokens (the record's a_t), 0 elsewhere; averages
over tokens are over all action tokens of the batch ("token mean").

A record's advantage is its reward, normalised over the batch by default
(``advantages_from_rewards``); with a value head it is ``r - V(s)`` (``advantages_from_values``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO knobs. Defaults follow TRL/tunix where they agree (see README "Training").

    clip_eps       epsilon of the clipped surrogate (ratio clipped to [1-eps, 1+eps])
    kl_coef        beta, weight of the KL(policy || reference) penalty
    kl_estimator   "k3" (exp(d) - d - 1 with d = ref - logp; non-negative, low variance; the
                   tunix/GRPO choice) or "k1" (logp - ref; TRL's default)
    entropy_coef   weight of the entropy bonus (0 = off)
    ppo_epochs     optimizer updates per batch; the first sees ratio 1 exactly
    ratio_level    "token": one ratio per action token; "sequence": one per record, the
                   geometric mean of its token ratios, exp(mean_t(logp - old)) (GSPO-style)
    advantage      "batch_norm": (r - mean_B r) / (std_B r + eps); "raw": r;
                   "value": r - V(s) from a learned value head (critic built from the policy)
    vf_coef        weight of the value loss 0.5 (V - r)^2 (advantage="value" only)
    """

    clip_eps: float = 0.2
    kl_coef: float = 0.05
    kl_estimator: Literal["k1", "k3"] = "k3"
    entropy_coef: float = 0.0
    ppo_epochs: int = 2
    ratio_level: Literal["token", "sequence"] = "token"
    advantage: Literal["batch_norm", "raw", "value"] = "batch_norm"
    vf_coef: float = 0.1
    adv_eps: float = 1e-6

    def __post_init__(self):
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"ppo.clip_eps must lie in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0 or self.entropy_coef < 0 or self.vf_coef < 0:
            raise ValueError("ppo.kl_coef, ppo.entropy_coef and ppo.vf_coef must be >= 0")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"ppo.kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.ratio_level not in ("token", "sequence"):
            raise ValueError(f"ppo.ratio_level must be 'token' or 'sequence', got {self.ratio_level!r}")
        if self.advantage not in ("batch_norm", "raw", "value"):
            raise ValueError(f"ppo.advantage must be batch_norm, raw or value, got {self.advantage!r}")
        if self.ppo_epochs < 1:
            raise ValueError(f"ppo.ppo_epochs must be >= 1, got {self.ppo_epochs}")


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Mean of x where mask is 1 (0 where the mask is empty)."""
    mask = mask.astype(x.dtype)
    return (x * mask).sum(axis=axis) / jnp.maximum(mask.sum(axis=axis), 1.0)


def token_logprobs(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """log p(targets[b, t] | logits[b, t]) [B, T], float32.

    As logit[target] - logsumexp(logits): no [B, T, V] log-softmax is built, which made the
    SmolLM2 LoRA train step (1 x 512 tokens, 2 CPU cores) 7% faster (5.92 -> 5.52 s).
    """
    logits_btv = logits_btv.astype(jnp.float32)
    picked = jnp.take_along_axis(logits_btv, targets_bt[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits_btv, axis=-1)


def token_entropy(logits_btv: jax.Array) -> jax.Array:
    """Entropy of each position's next-token distribution [B, T], float32 (nats)."""
    logp = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
    return -(jnp.exp(logp) * logp).sum(-1)


def kl_estimate(logp_bt: jax.Array, ref_logp_bt: jax.Array, estimator: str) -> jax.Array:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs."""
    if estimator == "k1":
        return logp_bt - ref_logp_bt
    if estimator == "k3":
        d = ref_logp_bt - logp_bt
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r} (use 'k1' or 'k3')")


def advantages_from_rewards(reward_b: jax.Array, normalise: bool, eps: float = 1e-6) -> jax.Array:
    """The record's reward as its advantage, standardised over the batch when ``normalise``."""
    reward_b = reward_b.astype(jnp.float32)
    if not normalise:
        return reward_b
    return (reward_b - reward_b.mean()) / (reward_b.std() + eps)


def advantages_from_values(reward_b: jax.Array, value_b: jax.Array) -> jax.Array:
    """A = r - V(s): one-step return minus the critic's estimate (no gradient into the critic)."""
    return reward_b.astype(jnp.float32) - jax.lax.stop_gradient(value_b.astype(jnp.float32))


def value_loss(value_b: jax.Array, reward_b: jax.Array) -> jax.Array:
    return 0.5 * jnp.mean((value_b.astype(jnp.float32) - reward_b.astype(jnp.float32)) ** 2)


def ppo_loss(
    logp_bt: jax.Array,
    old_logp_bt: jax.Array,
    ref_logp_bt: jax.Array,
    advantages_b: jax.Array,
    mask_bt: jax.Array,
    cfg: PPOConfig,
    entropy_bt: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate + kl_coef * KL - entropy_coef * entropy, and metrics.

    ``old_logp_bt`` (policy at the start of the PPO iteration) and ``ref_logp_bt`` (frozen
    base) carry no gradient. Returns (scalar loss, dict of scalar metrics).
    """
    mask = mask_bt.astype(jnp.float32)
    old = jax.lax.stop_gradient(old_logp_bt)
    ref = jax.lax.stop_gradient(ref_logp_bt)
    adv = jax.lax.stop_gradient(advantages_b.astype(jnp.float32))
    lo, hi = 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps
    log_ratio_bt = logp_bt - old
    if cfg.ratio_level == "token":
        ratio = jnp.exp(log_ratio_bt)
        unclipped = -adv[:, None] * ratio
        clipped = -adv[:, None] * jnp.clip(ratio, lo, hi)
        pg_loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
        clip_frac = masked_mean((clipped > unclipped).astype(jnp.float32), mask)
        ratio_stats_mask = mask
    else:
        has_tokens = (mask.sum(-1) > 0).astype(jnp.float32)
        ratio = jnp.exp(masked_mean(log_ratio_bt, mask, axis=-1))  # [B]
        unclipped = -adv * ratio
        clipped = -adv * jnp.clip(ratio, lo, hi)
        pg_loss = masked_mean(jnp.maximum(unclipped, clipped), has_tokens)
        clip_frac = masked_mean((clipped > unclipped).astype(jnp.float32), has_tokens)
        ratio_stats_mask = has_tokens
    kl = masked_mean(kl_estimate(logp_bt, ref, cfg.kl_estimator), mask)
    loss = pg_loss + cfg.kl_coef * kl
    metrics = {}
    if entropy_bt is not None:
        entropy = masked_mean(entropy_bt, mask)
        loss = loss - cfg.entropy_coef * entropy
        metrics["entropy"] = entropy
    big = jnp.finfo(jnp.float32).max
    sg = jax.lax.stop_gradient
    metrics.update(
        loss=loss,
        pg_loss=pg_loss,
        kl=kl,
        clip_frac=sg(clip_frac),
        approx_kl=sg(masked_mean(0.5 * log_ratio_bt ** 2, mask)),
        ratio_mean=sg(masked_mean(ratio, ratio_stats_mask)),
        ratio_max=sg(jnp.max(jnp.where(ratio_stats_mask > 0, ratio, -big))),
        ratio_min=sg(jnp.min(jnp.where(ratio_stats_mask > 0, ratio, big))),
    )
    return loss, metrics


def ppo_loss_from_logits(
    logits_btv: jax.Array,
    targets_bt: jax.Array,
    old_logp_bt: jax.Array,
    ref_logp_bt: jax.Array,
    advantages_b: jax.Array,
    mask_bt: jax.Array,
    cfg: PPOConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`ppo_loss` on the policy's logits (entropy from the full distribution)."""
    logp = token_logprobs(logits_btv, targets_bt)
    entropy = token_entropy(logits_btv)
    if cfg.entropy_coef == 0.0:
        entropy = jax.lax.stop_gradient(entropy)  # a metric only: no backward pass through it
    return ppo_loss(logp, old_logp_bt, ref_logp_bt, advantages_b, mask_bt, cfg, entropy)
