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
from spark_jax.model.config import LlamaConfig

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
QUERY_CHUNK = 512  # queries per attention block in long forward passes


def causal_blocks(t: int) -> int:
    """Query blocks for a causal pass of t tokens with keys = queries (0: attend in one piece).

    About 128 queries per block, 4 to 8 blocks: on 2 CPU cores, SmolLM2 hidden states of 8 x 256
    tokens took 4.3 s in 4 blocks (4.6 s in 8, 4.9 s in one) and of 2 x 1024 tokens 5.8 s in 8
    blocks (6.4 s in 4, 7.3 s in one). More blocks mean more ops to compile.
    """
    if t < 256:
        return 0
    n = min(8, max(4, t // 128))
    return n if t % n == 0 else 0


class KVCache(NamedTuple):
    """Per-layer keys [B, K, E, S] and values [B, K, S, E] (heads-major), slot validity [B, S]
    and the next write slot (scalar). Heads-major makes both attention products plain batched
    matmuls over (B, K) with no transpose of the cache per decode step; keys with the slots
    minor make q.k a row-times-matrix product over contiguous slots (4x faster than over
    [S, E] rows on XLA:CPU for a decode step at 576 slots)."""

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
        blocks = causal_blocks(t) if live == t else 0
        if blocks:
            out = _attend_causal_blocks(q, k, v, mask_bts, cfg.head_dim, blocks)
        elif t > QUERY_CHUNK and t % QUERY_CHUNK == 0:
            # Long prefills attend one query block at a time, so the float32 scores take
            # [B, K, G, QUERY_CHUNK, S] instead of [B, K, G, T, S] (16 x 4096 tokens: 35 GB -> 4 GB).
            n = t // QUERY_CHUNK
            q_blocks = q.reshape(b, *q.shape[1:3], n, QUERY_CHUNK, cfg.head_dim).transpose(3, 0, 1, 2, 4, 5)
            mask_blocks = mask_bts.reshape(b, n, QUERY_CHUNK, -1).swapaxes(0, 1)
            out = jax.lax.map(lambda qm: _attend(qm[0], k, v, qm[1], cfg.head_dim), (q_blocks, mask_blocks))
            out = out.transpose(1, 2, 3, 0, 4, 5).reshape(q.shape)
        else:
            out = _attend(q, k, v, mask_bts, cfg.head_dim)
        out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, cfg.num_heads * cfg.head_dim)
        return self.o_proj(out), kv


def _attend(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim: int) -> jax.Array:
    """Softmax attention of grouped queries [B, K, G, T, E] over keys [B, K, E, S] and values
    [B, K, S, E]; scores and softmax in float32. The G query heads sharing a key head are folded
    into the matmul's rows, so each product is one batched matmul over (B, K)."""
    b, k_heads, g, t, e = q_bkgte.shape
    q = q_bkgte.reshape(b, k_heads, g * t, e)
    scores = jnp.einsum("bkme,bkes->bkms", q, k_bkes, preferred_element_type=jnp.float32)
    scores = scores.reshape(b, k_heads, g, t, -1) * (head_dim ** -0.5)
    scores = jnp.where(mask_bts[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_bkse.dtype).reshape(b, k_heads, g * t, -1)
    return jnp.einsum("bkms,bkse->bkme", probs, v_bkse).reshape(b, k_heads, g, t, e)


def _attend_causal_blocks(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim: int, blocks: int) -> jax.Array:
    """:func:`_attend` for a cache-free causal pass (keys = queries, T = S), in ``blocks`` query
    blocks; block i reads only keys [0, (i + 1) T / blocks), since every later key is masked.

    With n blocks the score and probability tensors, and their matmuls, shrink to (n + 1) / 2n
    of the full square (4 blocks: 10/16). Rows whose mask is all zero (padding queries) are
    garbage either way.
    """
    t = q_bkgte.shape[3]
    size = t // blocks
    outs = []
    for i in range(blocks):
        end = (i + 1) * size
        outs.append(_attend(q_bkgte[:, :, :, i * size:end], k_bkes[..., :end], v_bkse[:, :, :end],
                            mask_bts[:, i * size:end, :end], head_dim))
    return jnp.concatenate(outs, axis=3)


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
                      live_slots: int | None = None):
        """Final-norm hidden states [B, T, D] and the updated cache (None without one).

        ``attention_mask_bt`` marks real tokens (1) and padding (0); ``positions_bt`` are the
        RoPE positions. With a cache, the T tokens are written at slots [index, index + T).
        ``live_slots`` (static) promises index + T <= live_slots: attention then reads only those
        first slots, not the empty room left for new tokens. ``live_slots == T`` is a prefill
        into an empty cache, which attends in causal blocks (``causal_blocks``).
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


class RowSplitLinear(nnx.Module):
    """A bias-free linear map whose weight is held as ``len(parts)`` row blocks of the
    transposed kernel, each [N_i, D_in]; for products with a few token rows (decode steps).

    XLA:CPU (YNNPACK) runs a few-row product on one thread, as one pass over the weight, and at
    about twice the memory bandwidth when the weight is the left operand. Independent blocks
    run on different threads, so a step streams its weights from memory on every core (SmolLM2,
    30 layers, 8 rows, 2 cores: 43 ms against 68 ms for x @ kernel with Eigen).
    """

    def __init__(self, parts: tuple[jax.Array, ...]):
        self.parts = nnx.data(tuple(parts))

    @classmethod
    def from_kernel(cls, kernel_io: jax.Array, parts: int) -> "RowSplitLinear":
        """From a kernel [D_in, N]."""
        return cls(_row_blocks(kernel_io.T, parts))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., D_in] -> [..., N] in the weight's dtype."""
        x = x.astype(self.parts[0].dtype)
        out = jnp.concatenate([jnp.einsum("...d,nd->n...", x, w) for w in self.parts], axis=0)
        return jnp.moveaxis(out, 0, -1)


def _row_blocks(weight_nd: jax.Array, parts: int) -> tuple[jax.Array, ...]:
    n = weight_nd.shape[0]
    bounds = [n * i // parts for i in range(parts + 1)]
    return tuple(weight_nd[lo:hi] for lo, hi in zip(bounds, bounds[1:]) if hi > lo)


_PROJECTIONS = (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj")))


def _is_plain_linear(module) -> bool:
    """An ``nnx.Linear`` holding nothing but a float kernel (no adapters, no quantised weights)."""
    if not isinstance(module, nnx.Linear):
        return False
    leaves = jax.tree_util.tree_leaves(nnx.state(module))
    return len(leaves) == 1 and jnp.issubdtype(leaves[0].dtype, jnp.floating)


def supports_decode_layout(model: Llama) -> bool:
    """Whether ``with_decode_layout`` applies: every projection (and an untied LM head) is a plain
    linear map. LoRA (qwix) and NF4 models are not; merge their adapters first."""
    heads = [] if model.lm_head is None else [model.lm_head]
    projections = [getattr(getattr(layer, owner), name) for layer in model.layers
                   for owner, names in _PROJECTIONS for name in names]
    return all(_is_plain_linear(m) for m in projections + heads)


def with_decode_layout(model: Llama, parts: int) -> Llama:
    """A copy of ``model`` whose projections (and LM head) are ``RowSplitLinear`` blocks, for
    the token-by-token loop on CPU. Inside a jit the blocks are built once per call, before the
    loop: one pass over the weights, repaid after a step or two, and a second copy of the weights
    while the loop runs. Same function, new layout."""
    if not supports_decode_layout(model):
        raise ValueError("with_decode_layout needs plain linear projections; this model has adapters or "
                         "quantised weights (merge them first, e.g. spark_jax.rl.adapters.merged_model)")
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)
    dtype = jnp.dtype(model.config.dtype)
    for layer in copy.layers:
        for owner_name, names in _PROJECTIONS:
            owner = getattr(layer, owner_name)
            for name in names:
                kernel = getattr(owner, name).kernel[...].astype(dtype)
                setattr(owner, name, RowSplitLinear.from_kernel(kernel, parts))
    if copy.lm_head is None:
        table = copy.embed_tokens.embedding[...].astype(dtype)
        copy.lm_head = nnx.data(RowSplitLinear(_row_blocks(table, parts)))  # the tied table is [V, D] already
    else:
        copy.lm_head = RowSplitLinear.from_kernel(copy.lm_head.kernel[...].astype(dtype), parts)
    return copy


def positions_from_mask(attention_mask_bt, shape) -> jax.Array:
    """RoPE positions [B, T]: 0 at each sequence's first real token (left padding safe)."""
    if attention_mask_bt is None:
        return jnp.broadcast_to(jnp.arange(shape[1], dtype=jnp.int32), shape)
    mask = attention_mask_bt.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)
