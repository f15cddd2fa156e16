"""A critic built from the policy (as tunix does): the decoder backbone plus a 1-unit head."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from spark_jax.model.llama import Llama, positions_from_mask


class Critic(nnx.Module):
    """V(s) at every position [B, T] from the backbone's final hidden states (float32)."""

    def __init__(self, backbone: Llama, *, rngs: nnx.Rngs):
        self.backbone = backbone
        d = backbone.config.hidden_size
        self.value_head = nnx.Linear(d, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, input_ids_bt, positions_bt=None, attention_mask_bt=None):
        if positions_bt is None:
            positions_bt = positions_from_mask(attention_mask_bt, input_ids_bt.shape)
        hidden, _ = self.backbone.hidden_states(input_ids_bt, positions_bt, attention_mask_bt)
        return self.value_head(hidden.astype(jnp.float32))[..., 0]

