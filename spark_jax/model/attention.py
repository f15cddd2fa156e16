"""Softmax attention over grouped queries, as one entry point (``attend``) that picks the
cheapest exact path for the shapes it is given.

Shapes: B batch, K kv heads, G query heads per kv head, T queries, S key slots, E head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
QUERY_CHUNK = 512  # queries per attention block in long forward passes


def causal_blocks(t: int) -> int:
    """Query blocks for a causal pass of t tokens with keys = queries (0: attend in one piece).

    About 128 queries per block, 4 to 8 blocks: fewer blocks leave more masked work in each,
    more blocks mean more ops to compile (benchmarks/model_throughput.py times the prefill).
    """
    if t < 256:
        return 0
    n = min(8, max(4, t // 128))
    return n if t % n == 0 else 0


def attend(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim: int, *, keys_are_queries: bool) -> jax.Array:
    """Attention output [B, K, G, T, E] of queries [B, K, G, T, E] over keys [B, K, E, S] and
    values [B, K, S, E]; ``mask_bts`` marks the key slots each query may read.

    ``keys_are_queries``: the keys are exactly these T tokens (a pass without a cache, or a
    prefill into an empty one), so the causal mask is a square and later key blocks can be
    skipped. Otherwise long query runs go one chunk at a time to bound the float32 scores.
    """
    t = q_bkgte.shape[3]
    blocks = causal_blocks(t) if keys_are_queries else 0
    if blocks:
        return _attend_causal_blocks(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim, blocks)
    if t > QUERY_CHUNK and t % QUERY_CHUNK == 0:
        return _attend_query_chunks(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim)
    return _attend(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim)


def _attend(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim: int) -> jax.Array:
    """Softmax attention of grouped queries [B, K, G, T, E] over keys [B, K, E, S] and values
    [B, K, S, E]; scores and softmax in float32. The G query heads sharing a key head are folded
    into the matmul's rows, so each product is one batched matmul over (B, K)."""
    b, k_heads, g, t, e = q_bkgte.shape
    q = q_bkgte.reshape(b, k_heads, g * t, e)
    scores = jnp.einsum("bkme,bkes->bkms", q, k_bkes, preferred_element_type=jnp.float32)
    scores = scores.reshape(b, k_heads, g, t, -1) * (head_dim ** -0.5)
    scores = jnp.where(mask_bts[:, None, None, :, :], scores, MASK_VALUE)
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


def _attend_query_chunks(q_bkgte, k_bkes, v_bkse, mask_bts, head_dim: int) -> jax.Array:
    """:func:`_attend` one block of ``QUERY_CHUNK`` queries at a time, so the float32 scores take
    [B, K, G, QUERY_CHUNK, S] instead of [B, K, G, T, S] (16 x 4096 tokens: 35 GB -> 4 GB)."""
    b, k_heads, g, t, e = q_bkgte.shape
    n = t // QUERY_CHUNK
    q_blocks = q_bkgte.reshape(b, k_heads, g, n, QUERY_CHUNK, e).transpose(3, 0, 1, 2, 4, 5)
    mask_blocks = mask_bts.reshape(b, n, QUERY_CHUNK, -1).swapaxes(0, 1)
    out = jax.lax.map(lambda qm: _attend(qm[0], k_bkes, v_bkse, qm[1], head_dim), (q_blocks, mask_blocks))
    return out.transpose(1, 2, 3, 0, 4, 5).reshape(q_bkgte.shape)
