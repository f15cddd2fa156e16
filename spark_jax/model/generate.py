"""Batched decoding that stays on the device: one prefill, then a ``lax.while_loop`` over the KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spark_jax.model.llama import KVCache, Llama, positions_from_mask

UNFILLED = -1  # token value of output slots never written (after EOS or past the limit)


def sample_next(logits_bv: jax.Array, temperature: jax.Array, rng: jax.Array) -> jax.Array:
    """Greedy where temperature == 0, else a categorical draw from softmax(logits / T). [B] int32."""

    def draw(_):
        return jax.random.categorical(rng, logits_bv / temperature, axis=-1).astype(jnp.int32)

    def greedy(_):
        return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)

    # A cond, not a where: greedy decoding must not pay for 8 x 49k random draws per step.
    return jax.lax.cond(temperature > 0, draw, greedy, None)


def decode(
    model: Llama,
    input_ids_bp: jax.Array,
    mask_bp: jax.Array,
    limit: jax.Array,
    temperature: jax.Array,
    rng: jax.Array,
    eos_ids: jax.Array,
    *,
    max_new_tokens: int,
) -> jax.Array:
    """New tokens [B, max_new_tokens] for left-padded prompts [B, P]; UNFILLED after EOS/limit.

    ``limit`` (traced, <= max_new_tokens) is how many tokens to make, so a shape bucket serves
    every smaller request without recompiling. The loop ends early once every row hit EOS.
    """
    b, p = input_ids_bp.shape
    cache = KVCache.empty(model.config, b, p + max_new_tokens)
    positions = positions_from_mask(mask_bp, (b, p))
    hidden, cache = model.hidden_states(input_ids_bp, positions, mask_bp, cache)
    rng, step_rng = jax.random.split(rng)
    token = sample_next(model.project(hidden[:, -1:, :])[:, 0], temperature, step_rng)
    out = jnp.full((b, max_new_tokens), UNFILLED, jnp.int32).at[:, 0].set(token)
    done = jnp.isin(token, eos_ids)
    next_pos = positions[:, -1] + 1

    def cond(carry):
        i, _, _, _, done, _, _ = carry
        return (i < limit) & ~jnp.all(done)

    def body(carry):
        i, token, cache, out, done, pos, rng = carry
        feed = jnp.maximum(token, 0)  # finished rows carry UNFILLED; feed any valid id
        logits, cache = model(feed[:, None], pos[:, None], jnp.ones((b, 1), jnp.bool_), cache)
        rng, step_rng = jax.random.split(rng)
        token = sample_next(logits[:, 0], temperature, step_rng)
        token = jnp.where(done, UNFILLED, token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
        done = done | jnp.isin(token, eos_ids)
        return i + 1, token, cache, out, done, pos + 1, rng

    carry = (jnp.asarray(1, jnp.int32), token, cache, out, done, next_pos, rng)
    _, _, _, out, _, _, _ = jax.lax.while_loop(cond, body, carry)
    return out


def trim_outputs(tokens_bn, eos_ids, limit: int) -> list[list[int]]:
    """Host-side: each row up to and including its first EOS, at most ``limit`` tokens."""
    eos = set(int(e) for e in eos_ids)
    rows = []
    for row in tokens_bn:
        kept = []
        for t in row[:limit]:
            t = int(t)
            if t == UNFILLED:
                break
            kept.append(t)
            if t in eos:
                break
        rows.append(kept)
    return rows
