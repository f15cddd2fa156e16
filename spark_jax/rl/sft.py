"""Supervised fine-tuning loss: cross-entropy on the selected actions' tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spark_jax.rl.ppo import masked_mean, token_logprobs


def sft_loss(logits_btv: jax.Array, targets_bt: jax.Array, loss_mask_bt: jax.Array) -> tuple[jax.Array, dict]:
    """Mean negative log-likelihood over the action tokens (mask 1), and metrics."""
    logp = token_logprobs(logits_btv, targets_bt)
    mask = loss_mask_bt.astype(jnp.float32)
    loss = -masked_mean(logp, mask)
    return loss, {"loss": loss, "nll": loss, "action_tokens": mask.sum()}
