"""Llama 3.x / SmolLM2 decoder in Flax NNX.

Shapes: B batch, T query tokens, S key slots (T without a cache, the cache length with one),
D hidden size, H query heads, K kv heads, G = H // K queries per kv head, E head dim, V vocab.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from spark_jax.model import rope
from spark_jax.model.attention import attend
from spark_jax.model.config import LlamaConfig


class KVCache(NamedTuple):
    """Per-layer keys [B, K, E, S] and values [B, K, S, E] (heads-major), slot validity [B, S]
    and the next write slot (scalar). Heads-major makes both attention products plain batched
    matmuls over (B, K) with no transpose of the cache per decode step; keys with the slots
    minor make q.k a row-times-matrix product over contiguous slots, which XLA:CPU runs
    several times faster than a product over [S, E] rows."""

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid_bs: jax.Array
    index: jax.Array

    @classmethod
    def empty(cls, config: LlamaConfig, batch: int, slots: int) -> "KVCache":
        k_shape = (batch, config.num_kv_heads, config.head_dim, slots)
        v_shape = (batch, config.num_kv_heads, slots, config.head_dim)
        dtype = jnp.dtype(config.dtype)
        return cls(tuple(jnp.zeros(k_shape, dtype) for _ in range(config.num_layers)),
                   tuple(jnp.zeros(v_shape, dtype) for _ in range(config.num_layers)),
                   jnp.zeros((batch, slots), jnp.bool_), jnp.zeros((), jnp.int32))

    def broadcast(self, batch: int) -> "KVCache":
        """A one-row cache (a shared prefix) repeated to ``batch`` rows."""
        widen = lambda x: jnp.broadcast_to(x, (batch,) + x.shape[1:])  # noqa: E731
        return KVCache(tuple(map(widen, self.keys)), tuple(map(widen, self.values)), widen(self.valid_bs), self.index)

    def grown(self, slots: int) -> "KVCache":
        """The same cache with ``slots`` slots in all: the new ones empty, after the existing ones."""
        extra = slots - self.valid_bs.shape[1]
        if extra < 0:
            raise ValueError(f"cannot shrink a cache of {self.valid_bs.shape[1]} slots to {slots}")
        pad = lambda x, axis: jnp.pad(x, [(0, extra if a == axis else 0) for a in range(x.ndim)])  # noqa: E731
        return KVCache(tuple(pad(k, 3) for k in self.keys), tuple(pad(v, 2) for v in self.values),
                       pad(self.valid_bs, 1), self.index)


def _linear(cfg: LlamaConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in, d_out, use_bias=False, dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype),
        kernel_init=nnx.initializers.normal(0.02), rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """x / rms(x) * weight, statistics in float32 (as transformers' LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float, param_dtype: str):
        self.weight = nnx.Param(jnp.ones((dim,), jnp.dtype(param_dtype)))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(x.dtype) * normed.astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        d, e = cfg.hidden_size, cfg.head_dim
        self.q_proj = _linear(cfg, d, cfg.num_heads * e, rngs)
        self.k_proj = _linear(cfg, d, cfg.num_kv_heads * e, rngs)
        self.v_proj = _linear(cfg, d, cfg.num_kv_heads * e, rngs)
        self.o_proj = _linear(cfg, cfg.num_heads * e, d, rngs)

    def __call__(self, x_btd, cos_bte, sin_bte, mask_bts, kv=None, index=None):
        """Returns (output [B, T, D], (keys, values) written into the cache or None).

        The queries read the first S key slots, S = ``mask_bts.shape[-1]`` (the cache may hold
        more; see ``Llama.hidden_states(live_slots=)``). S == T with a cache means the cache was
        empty: the new keys are all there is, and attention runs in causal blocks as without one.
        """
        cfg = self.cfg
        b, t, _ = x_btd.shape
        q = self.q_proj(x_btd).reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x_btd).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = self.v_proj(x_btd).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        q = rope.apply_rope(q, cos_bte, sin_bte)
        k = rope.apply_rope(k, cos_bte, sin_bte)
        # Heads-major from here on: q [B, K, G, T, E], k [B, K, E, S], v [B, K, S, E].
        q = q.reshape(b, t, cfg.num_kv_heads, cfg.q_per_kv, cfg.head_dim).transpose(0, 2, 3, 1, 4)
        k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
        live = mask_bts.shape[-1]
        if kv is not None:
            cache_k, cache_v = kv
            k_new, v_new = k.astype(cache_k.dtype), v.astype(cache_v.dtype)
            kv = (jax.lax.dynamic_update_slice(cache_k, k_new, (0, 0, 0, index)),
                  jax.lax.dynamic_update_slice(cache_v, v_new, (0, 0, index, 0)))
            k, v = (k_new, v_new) if live == t else (kv[0][..., :live], kv[1][:, :, :live])
        out = attend(q, k, v, mask_bts, cfg.head_dim, keys_are_queries=live == t)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, cfg.num_heads * cfg.head_dim)
        return self.o_proj(out), kv


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.gate_proj = _linear(cfg, cfg.hidden_size, cfg.intermediate_size, rngs)
        self.up_proj = _linear(cfg, cfg.hidden_size, cfg.intermediate_size, rngs)
        self.down_proj = _linear(cfg, cfg.intermediate_size, cfg.hidden_size, rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype)
        self.self_attn = Attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, cos, sin, mask, kv=None, index=None):
        attn_out, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, index)
        x = x + attn_out
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv


def _run_layer(layer: DecoderLayer, x, cos, sin, mask, kv, index):
    return layer(x, cos, sin, mask, kv, index)


def _run_layer_remat(layer: DecoderLayer, x, cos, sin, mask, kv, index):
    """_run_layer under jax.checkpoint: activations are recomputed in the backward pass.

    The layer goes in as (graphdef, state) through plain jax.checkpoint rather than nnx.remat,
    whose Variable updates fail ("different trace level") when the model is merged inside
    jax.grad/lax.scan, as in the trainer's step.
    """
    graphdef, state = nnx.split(layer)

    def run(state, x, cos, sin, mask, kv, index):
        return nnx.merge(graphdef, state)(x, cos, sin, mask, kv, index)

    return jax.checkpoint(run)(state, x, cos, sin, mask, kv, index)


class Llama(nnx.Module):
    """Decoder-only causal LM. Parameter names follow transformers' LlamaForCausalLM."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype), embedding_init=nnx.initializers.normal(0.02),
            rngs=rngs,
        )
        self.layers = nnx.List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.param_dtype)
        self.lm_head = None if cfg.tie_word_embeddings else _linear(cfg, cfg.hidden_size, cfg.vocab_size, rngs)

    def hidden_states(self, input_ids_bt, positions_bt, attention_mask_bt=None, cache: KVCache | None = None,
                      live_slots: int | None = None, allowed_btt=None):
        """Final-norm hidden states [B, T, D] and the updated cache (None without one).

        ``attention_mask_bt`` marks real tokens (1) and padding (0); ``positions_bt`` are the
        RoPE positions. With a cache, the T tokens are written at slots [index, index + T).
        ``live_slots`` (static) promises index + T <= live_slots: attention then reads only those
        first slots, not the empty room left for new tokens. ``live_slots == T`` is a prefill
        into an empty cache, which attends in causal blocks (``causal_blocks``).
        ``allowed_btt`` (bool [B, T, T]) further restricts which of the T new tokens each query
        reads (the cache's slots stay readable), e.g. several continuations of one prefix side by
        side in one row.
        """
        b, t = input_ids_bt.shape
        if attention_mask_bt is None:
            attention_mask_bt = jnp.ones((b, t), jnp.bool_)
        attention_mask_bt = attention_mask_bt.astype(jnp.bool_)
        if cache is None:
            valid_bs, q_slot, index = attention_mask_bt, jnp.arange(t), None
        else:
            index = cache.index
            valid_bs = jax.lax.dynamic_update_slice(cache.valid_bs, attention_mask_bt, (0, index))
            q_slot = index + jnp.arange(t)
        k_slot = jnp.arange(valid_bs.shape[1])
        mask_bts = valid_bs[:, None, :] & (k_slot[None, None, :] <= q_slot[None, :, None])
        if allowed_btt is not None:
            allowed = allowed_btt.astype(jnp.bool_)
            if cache is not None:  # the cache's slots stay readable; the rule applies to the new T
                allowed = jax.lax.dynamic_update_slice(jnp.ones((b, t, valid_bs.shape[1]), jnp.bool_),
                                                       jnp.broadcast_to(allowed, (b, t, t)), (0, 0, index))
            mask_bts = mask_bts & allowed
        if live_slots is not None:
            if cache is None or not t <= live_slots <= valid_bs.shape[1]:
                raise ValueError(f"live_slots={live_slots} needs a cache and must lie in [T={t}, "
                                 f"cache slots={valid_bs.shape[1]}]")
            mask_bts = mask_bts[:, :, :live_slots]
        cfg = self.config
        inv_freq = rope.inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        cos, sin = rope.rope_tables(positions_bt, inv_freq)
        x = self.embed_tokens(input_ids_bt)
        run = _run_layer_remat if self.config.remat else _run_layer
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.keys[i], cache.values[i])
            x, kv = run(layer, x, cos, sin, mask_bts, kv, index)
            if cache is not None:
                new_keys.append(kv[0])
                new_values.append(kv[1])
        x = self.norm(x)
        if cache is None:
            return x, None
        return x, KVCache(tuple(new_keys), tuple(new_values), valid_bs, index + t)

    def project(self, hidden_btd) -> jax.Array:
        """Vocabulary logits [B, T, V] in float32."""
        if self.lm_head is None:
            logits = self.embed_tokens.attend(hidden_btd)
        else:
            logits = self.lm_head(hidden_btd)
        return logits.astype(jnp.float32)

    def __call__(self, input_ids_bt, positions_bt=None, attention_mask_bt=None, cache: KVCache | None = None):
        """Logits [B, T, V] float32 and the updated cache. Positions default to cumsum(mask) - 1."""
        if positions_bt is None:
            positions_bt = positions_from_mask(attention_mask_bt, input_ids_bt.shape)
        hidden, cache = self.hidden_states(input_ids_bt, positions_bt, attention_mask_bt, cache)
        return self.project(hidden), cache


def positions_from_mask(attention_mask_bt, shape) -> jax.Array:
    """RoPE positions [B, T]: 0 at each sequence's first real token (left padding safe)."""
    if attention_mask_bt is None:
        return jnp.broadcast_to(jnp.arange(shape[1], dtype=jnp.int32), shape)
    mask = attention_mask_bt.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)
