"""Offline step-wise PPO losses: clipped surrogate + KL to the frozen reference (+ entropy).

Pure functions of arrays, jit- and grad-friendly. Shapes: B rows, A action positions (the
tokens of every action span of a row), S spans per row, V vocabulary. Every loss is a
weighted *sum* over action tokens with ``weight_ba`` (``loss_weights``): the weights of a
whole global batch sum to 1, so gradients summed over micro-batches equal the one-batch
gradient whatever ``grad_accum`` is (``loss_normalization``: each action token counts the
same, or each record/step counts the same).

Advantages come per span (``spark_jax.rl.advantages``) and are spread over the span's tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

_REMOVED = {
    ("kl_estimator", "k1"): "ppo.kl_estimator=k1 was removed from the loss: differentiated, logp - ref is plain "
                            "unlikelihood of the data tokens, not a KL penalty; use 'full' (exact KL over the "
                            "vocabulary) or 'k3'",
    ("advantage", "batch_norm"): "ppo.advantage=batch_norm was removed: it standardised answer and tool steps "
                                 "together over one batch (batch 1 gave 0, batch 2 always +-1); use "
                                 "'running_norm' (per step group, running statistics), 'raw' or 'value'",
}


SURROGATES = ("ppo", "ppo_ref", "awr", "filtered")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO knobs (see docs/training.md for the defaults and why).

    clip_eps       epsilon of the clipped surrogate (ratio clipped to [1-eps, 1+eps])
    kl_coef        beta, weight of the KL(policy || reference) penalty
    kl_estimator   "full": exact KL over the vocabulary at each action position (needs the
                   reference's log-softmax there); "k3": exp(d) - d - 1, d = ref - logp (sampled)
    entropy_coef   weight of the entropy bonus (0 = off)
    ppo_epochs     optimizer updates per batch; the first sees ratio 1 exactly
    ratio_level    "token": one ratio per action token; "sequence": one per span (step), the
                   geometric mean of its token ratios (GSPO-style)
    advantage      "running_norm": the return standardised within its group with running
                   statistics; "raw": the return; "value": return - V(s_t) (learned critic);
                   "state": at judged steps the selected action's candidate reward R(s, a)
                   standardised over that state's judged candidates (a per-state baseline, no
                   later rewards), elsewhere (answer steps) "running_norm"
    norm_groups    "step": group by step index; "kind": tool/cot steps apart from answer steps
    norm_decay     per-batch forgetting of the running statistics
    gamma          discount of the return over the trajectory's later steps (0: own reward only)
    vf_coef        weight of the value loss 0.5 (V - G)^2 (advantage="value" only)
    surrogate      the token-level objective: "ppo" (SPaRK's clipped ratio to the batch's
                   snapshot; its first epoch is unbounded unlikelihood where A < 0), "ppo_ref"
                   (the same clip, the ratio taken to the KL reference, so no epoch moves a
                   token's probability past [1-eps, 1+eps] of the reference's), "awr"
                   (advantage-weighted regression: min(exp(A / awr_beta), awr_max_weight) x NLL)
                   or "filtered" (max(A, 0) x NLL: filtered behaviour cloning)
    awr_beta       AWR temperature, in advantage units
    awr_max_weight AWR weight clip
    """

    clip_eps: float = 0.2
    kl_coef: float = 0.05
    kl_estimator: Literal["full", "k3"] = "full"
    entropy_coef: float = 0.0
    ppo_epochs: int = 2
    ratio_level: Literal["token", "sequence"] = "token"
    advantage: Literal["running_norm", "raw", "value", "state"] = "running_norm"
    norm_groups: Literal["step", "kind"] = "step"
    norm_decay: float = 0.99
    gamma: float = 1.0
    vf_coef: float = 0.1
    adv_eps: float = 1e-6
    surrogate: Literal["ppo", "ppo_ref", "awr", "filtered"] = "awr"
    awr_beta: float = 1.0
    awr_max_weight: float = 20.0

    def __post_init__(self):
        for key in ("kl_estimator", "advantage"):
            if (key, getattr(self, key)) in _REMOVED:
                raise ValueError(_REMOVED[key, getattr(self, key)])
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"ppo.clip_eps must lie in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0 or self.entropy_coef < 0 or self.vf_coef < 0:
            raise ValueError("ppo.kl_coef, ppo.entropy_coef and ppo.vf_coef must be >= 0")
        if self.kl_estimator not in ("full", "k3"):
            raise ValueError(f"ppo.kl_estimator must be 'full' or 'k3', got {self.kl_estimator!r}")
        if self.ratio_level not in ("token", "sequence"):
            raise ValueError(f"ppo.ratio_level must be 'token' or 'sequence', got {self.ratio_level!r}")
        if self.advantage not in ("running_norm", "raw", "value", "state"):
            raise ValueError(f"ppo.advantage must be running_norm, raw, value or state, got {self.advantage!r}")
        if self.norm_groups not in ("step", "kind"):
            raise ValueError(f"ppo.norm_groups must be 'step' or 'kind', got {self.norm_groups!r}")
        if not 0 <= self.norm_decay < 1:
            raise ValueError(f"ppo.norm_decay must lie in [0, 1), got {self.norm_decay}")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"ppo.gamma must lie in [0, 1], got {self.gamma}")
        if self.ppo_epochs < 1:
            raise ValueError(f"ppo.ppo_epochs must be >= 1, got {self.ppo_epochs}")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"ppo.surrogate must be one of {SURROGATES}, got {self.surrogate!r}")
        if self.awr_beta <= 0 or self.awr_max_weight <= 0:
            raise ValueError("ppo.awr_beta and ppo.awr_max_weight must be > 0")


def token_logprobs(logits_btv: jax.Array, targets_bt: jax.Array) -> jax.Array:
    """log p(targets[b, t] | logits[b, t]) [B, T], float32, as logit[target] - logsumexp
    (no [B, T, V] log-softmax is built)."""
    logits_btv = logits_btv.astype(jnp.float32)
    picked = jnp.take_along_axis(logits_btv, targets_bt[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits_btv, axis=-1)


def token_entropy(logits_btv: jax.Array) -> jax.Array:
    """Entropy of each position's next-token distribution [B, T], float32 (nats)."""
    logp = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
    return -(jnp.exp(logp) * logp).sum(-1)


def k3_kl(logp_bt: jax.Array, ref_logp_bt: jax.Array) -> jax.Array:
    """Sampled estimate of KL(policy || reference) per token: exp(d) - d - 1, d = ref - logp (>= 0)."""
    d = ref_logp_bt - logp_bt
    return jnp.exp(d) - d - 1.0


def full_kl(logits_btv: jax.Array, ref_logprobs_btv: jax.Array) -> jax.Array:
    """Exact KL(policy || reference) over the vocabulary at each position [B, T] (nats)."""
    logp = jax.nn.log_softmax(logits_btv.astype(jnp.float32), axis=-1)
    return (jnp.exp(logp) * (logp - jax.lax.stop_gradient(ref_logprobs_btv))).sum(-1)


def loss_weights(action_mask_ba: jax.Array, action_span_ba: jax.Array, span_mask_bs: jax.Array,
                 normalization: str) -> jax.Array:
    """Per-token loss weights [B, A] that sum to 1 over the batch given (the *global* batch).

    "tokens": 1 / (action tokens in the batch); "records": 1 / (spans in the batch) spread
    evenly over each span's tokens, so every step counts the same whatever its length.
    """
    mask = action_mask_ba.astype(jnp.float32)
    if normalization == "tokens":
        return mask / jnp.maximum(mask.sum(), 1.0)
    if normalization == "records":
        per_span = span_sum(mask, action_span_ba, mask, span_mask_bs.shape[-1])  # tokens per span [B, S]
        tokens = jnp.take_along_axis(per_span, action_span_ba, axis=-1)
        return mask / jnp.maximum(tokens, 1.0) / jnp.maximum(span_mask_bs.sum(), 1.0)
    raise ValueError(f"unknown loss normalization {normalization!r} (use 'tokens' or 'records')")


def span_sum(x_ba: jax.Array, span_ba: jax.Array, mask_ba: jax.Array, num_spans: int) -> jax.Array:
    """Sum of x over each span's tokens [B, S]."""
    onehot = jax.nn.one_hot(span_ba, num_spans, dtype=jnp.float32) * mask_ba.astype(jnp.float32)[..., None]
    return jnp.einsum("ba,bas->bs", x_ba.astype(jnp.float32), onehot)


def ppo_loss(
    logp_ba: jax.Array,
    old_logp_ba: jax.Array,
    adv_ba: jax.Array,
    weight_ba: jax.Array,
    kl_ba: jax.Array,
    cfg: PPOConfig,
    *,
    action_span_ba: jax.Array | None = None,
    num_spans: int = 1,
    entropy_ba: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Surrogate + kl_coef * KL - entropy_coef * entropy, each a ``weight_ba`` sum.

    The surrogate is ``cfg.surrogate``: the clipped ratio to ``old_logp_ba`` ("ppo", "ppo_ref":
    the caller passes the reference's log-probs), or a weighted NLL ("awr", "filtered").
    ``old_logp_ba`` (the policy at the start of this batch's PPO iteration) and ``adv_ba`` (the
    span's advantage on each of its tokens) carry no gradient; ``kl_ba`` is the per-token KL
    (``full_kl`` or ``k3_kl``). Metrics are weighted sums too (add them over micro-batches),
    except ``ratio_max``/``ratio_min`` (take the max/min).
    """
    w = weight_ba.astype(jnp.float32)
    live = w > 0
    old = jax.lax.stop_gradient(old_logp_ba)
    adv = jax.lax.stop_gradient(adv_ba.astype(jnp.float32))
    lo, hi = 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps
    log_ratio = logp_ba - old
    if cfg.ratio_level == "token":
        ratio = jnp.exp(log_ratio)
    else:
        ones = live.astype(jnp.float32)
        per_span = span_sum(log_ratio, action_span_ba, ones, num_spans) / jnp.maximum(
            span_sum(ones, action_span_ba, ones, num_spans), 1.0)
        ratio = jnp.exp(jnp.take_along_axis(per_span, action_span_ba, axis=-1))
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, lo, hi)
    if cfg.surrogate in ("ppo", "ppo_ref"):
        pg_loss = (w * jnp.maximum(unclipped, clipped)).sum()
    else:
        pg_loss = (w * -token_weights(adv, cfg) * logp_ba).sum()
    kl = (w * kl_ba).sum()
    loss = pg_loss + cfg.kl_coef * kl
    sg = jax.lax.stop_gradient
    big = jnp.finfo(jnp.float32).max
    metrics = {}
    if entropy_ba is not None:
        entropy = (w * entropy_ba).sum()
        loss = loss - cfg.entropy_coef * entropy
        metrics["entropy"] = sg(entropy)
    metrics.update(
        loss=sg(loss),
        pg_loss=sg(pg_loss),
        kl=sg(kl),
        clip_frac=sg((w * (clipped > unclipped)).sum()) if cfg.surrogate in ("ppo", "ppo_ref") else jnp.zeros(()),
        approx_kl=sg((w * 0.5 * log_ratio ** 2).sum()),
        ratio_mean=sg((w * ratio).sum()),
        ratio_max=sg(jnp.max(jnp.where(live, ratio, -big))),
        ratio_min=sg(jnp.min(jnp.where(live, ratio, big))),
    )
    return loss, metrics


def token_weights(adv_ba: jax.Array, cfg: PPOConfig) -> jax.Array:
    """Non-negative per-token NLL weights of the regression surrogates (no gradient)."""
    if cfg.surrogate == "awr":
        return jnp.minimum(jnp.exp(adv_ba / cfg.awr_beta), cfg.awr_max_weight)
    if cfg.surrogate == "filtered":
        return jnp.maximum(adv_ba, 0.0)
    raise ValueError(f"surrogate {cfg.surrogate!r} has no token weights")


def value_loss(value_bs: jax.Array, return_bs: jax.Array, span_weight_bs: jax.Array) -> jax.Array:
    """0.5 (V(s_t) - G_t)^2 summed with ``span_weight_bs`` (1 / spans in the global batch)."""
    err = value_bs.astype(jnp.float32) - return_bs.astype(jnp.float32)
    return 0.5 * (span_weight_bs * err * err).sum()
