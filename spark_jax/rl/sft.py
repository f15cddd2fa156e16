"""Supervised fine-tuning loss: cross-entropy on the selected actions' tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sft_loss(logp_ba: jax.Array, weight_ba: jax.Array) -> tuple[jax.Array, dict]:
    """Negative log-likelihood of the action tokens as a ``weight_ba`` sum (the weights of the
    global batch sum to 1, see ``spark_jax.rl.ppo.loss_weights``), and metrics."""
    loss = -(weight_ba.astype(jnp.float32) * logp_ba).sum()
    return loss, {"loss": jax.lax.stop_gradient(loss), "nll": jax.lax.stop_gradient(loss)}
