"""Batched decoding that stays on the device: one prefill, then a ``lax.while_loop`` over the KV cache."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from spark_jax.model.cpu_decode import with_decode_layout
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


class Prefilled(NamedTuple):
    """A prompt batch run through the model: last hidden state [B, 1, D], the cache, and each
    row's next RoPE position [B]."""

    last_hidden: jax.Array
    cache: KVCache
    next_pos: jax.Array


def prefill(model: Llama, input_ids_bp: jax.Array, mask_bp: jax.Array, *, max_new_tokens: int) -> Prefilled:
    """Left-padded prompts [B, P] into a cache with room for ``max_new_tokens`` more."""
    b, p = input_ids_bp.shape
    cache = KVCache.empty(model.config, b, p + max_new_tokens)
    positions = positions_from_mask(mask_bp, (b, p))
    hidden, cache = model.hidden_states(input_ids_bp, positions, mask_bp, cache, live_slots=p)
    return Prefilled(hidden[:, -1:, :], cache, positions[:, -1] + 1)


def prefix_cache(model: Llama, prefix_ids_1c: jax.Array) -> KVCache:
    """The keys/values of a prompt prefix [1, C] (a system prompt), for later calls to reuse."""
    c = prefix_ids_1c.shape[1]
    cache = KVCache.empty(model.config, 1, c)
    _, cache = model.hidden_states(prefix_ids_1c, jnp.arange(c, dtype=jnp.int32)[None, :], None, cache, live_slots=c)
    return cache


def prefill_after(model: Llama, prefix: KVCache, suffix_ids_bs: jax.Array, suffix_mask_bs: jax.Array, *,
                  max_new_tokens: int) -> Prefilled:
    """``prefill`` of prompts that continue a cached prefix (``prefix_cache``, one row, C slots)
    with left-padded suffixes [B, S]; the same slot layout as ``prefill_with_prefix``."""
    b, s = suffix_ids_bs.shape
    c = prefix.valid_bs.shape[1]
    positions = c + positions_from_mask(suffix_mask_bs, (b, s))
    hidden, cache = model.hidden_states(suffix_ids_bs, positions, suffix_mask_bs,
                                        prefix.grown(c + s + max_new_tokens).broadcast(b), live_slots=c + s)
    return Prefilled(hidden[:, -1:, :], cache, positions[:, -1] + 1)


def prefill_with_prefix(model: Llama, prefix_ids_1c: jax.Array, suffix_ids_bs: jax.Array, suffix_mask_bs: jax.Array,
                        *, max_new_tokens: int) -> Prefilled:
    """``prefill`` for prompts that all start with the same C tokens: the prefix [1, C] is run once
    and its keys/values are copied to every row, then the left-padded suffixes [B, S] follow.

    Cache slots are [prefix | suffix padding | suffix | new tokens]; padding slots are invalid and
    RoPE positions count real tokens only, so every row attends to exactly what ``prefill`` gives it.
    """
    return prefill_after(model, prefix_cache(model, prefix_ids_1c), suffix_ids_bs, suffix_mask_bs,
                         max_new_tokens=max_new_tokens)


def decode(model: Llama, input_ids_bp, mask_bp, limit, temperature, rng, eos_ids, *,
           max_new_tokens: int) -> jax.Array:
    """New tokens [B, max_new_tokens] for left-padded prompts [B, P]; UNFILLED after EOS/limit.

    ``limit`` (traced, <= max_new_tokens) is how many tokens to make, so a shape bucket serves
    every smaller request without recompiling. The loop ends early once every row hit EOS.
    """
    state = prefill(model, input_ids_bp, mask_bp, max_new_tokens=max_new_tokens)
    return sample_loop(model, state, limit, temperature, rng, eos_ids, max_new_tokens=max_new_tokens)


def decode_with_prefix(model: Llama, prefix_ids_1c, suffix_ids_bs, suffix_mask_bs, limit, temperature, rng, eos_ids,
                       *, max_new_tokens: int) -> jax.Array:
    """``decode`` for prompts sharing a prefix [1, C] (see ``prefill_with_prefix``)."""
    state = prefill_with_prefix(model, prefix_ids_1c, suffix_ids_bs, suffix_mask_bs, max_new_tokens=max_new_tokens)
    return sample_loop(model, state, limit, temperature, rng, eos_ids, max_new_tokens=max_new_tokens)


def sample_loop(model: Llama, state: Prefilled, limit, temperature, rng, eos_ids, *, max_new_tokens: int,
                weight_blocks: int = 0, return_cache: bool = False):
    """Samples the first token from the prompt's last hidden state, then one token per step over
    the cache in a ``lax.while_loop`` until ``limit`` tokens or EOS in every row.

    ``weight_blocks`` > 0 runs the loop on ``with_decode_layout(model, weight_blocks)`` (CPU).
    Returns the tokens, and the final cache too with ``return_cache``.
    """
    last_hidden_b1d, cache, next_pos_b = state
    if weight_blocks:
        model = with_decode_layout(model, weight_blocks)
    b = last_hidden_b1d.shape[0]
    rng, step_rng = jax.random.split(rng)
    token = sample_next(model.project(last_hidden_b1d)[:, 0], temperature, step_rng)
    out = jnp.full((b, max_new_tokens), UNFILLED, jnp.int32).at[:, 0].set(token)
    done = jnp.isin(token, eos_ids)

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

    carry = (jnp.asarray(1, jnp.int32), token, cache, out, done, next_pos_b, rng)
    _, _, cache, out, _, _, _ = jax.lax.while_loop(cond, body, carry)
    return (out, cache) if return_cache else out


def shared_prefix_length(prompts, *, minimum: int = 64) -> int:
    """Host-side: how many leading tokens to run once for all ``prompts`` (0: not worth it).

    The longest common prefix, rounded down to a length bucket (so calls with similar prefixes
    share a compilation) and leaving every prompt at least one token of its own.
    """
    if len(prompts) < 2:
        return 0
    common = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = 0
        limit = min(common, len(p))
        while n < limit and p[n] == first[n]:
            n += 1
        common = n
        if common < minimum:
            return 0
    size = 0
    for candidate in _prefix_ladder(minimum):
        if candidate > common:
            break
        size = candidate
    return size


def _prefix_ladder(minimum: int):
    size = minimum
    while True:
        yield size
        yield size * 3 // 2
        size *= 2


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


def continuation_logprobs(model: Llama, prompt_ids_1p: jax.Array, prompt_mask_1p: jax.Array,
                          cont_ids_nh: jax.Array, cont_mask_nh: jax.Array, prefix: KVCache | None = None) -> jax.Array:
    """Log-probs [N, H] (float32, 0 on padding) of N short continuations of one prompt.

    The left-padded prompt [1, P] is prefilled once (after ``prefix``, a ``prefix_cache`` of its
    first C tokens, when given); its cache is shared by the N right-padded continuations [N, H],
    which run as one [N, H] pass over it. Only the continuation positions are projected onto the
    vocabulary: token j's log-prob comes from the hidden state before it (the prompt's last one
    for j = 0).
    """
    n, h = cont_ids_nh.shape
    p = prompt_ids_1p.shape[1]
    if prefix is None:
        state = prefill(model, prompt_ids_1p, prompt_mask_1p, max_new_tokens=h)
    else:
        state = prefill_after(model, prefix, prompt_ids_1p, prompt_mask_1p, max_new_tokens=h)
        p += prefix.valid_bs.shape[1]
    positions = state.next_pos[:, None] + jnp.arange(h, dtype=jnp.int32)[None, :]
    hidden, _ = model.hidden_states(cont_ids_nh, jnp.broadcast_to(positions, (n, h)), cont_mask_nh,
                                    state.cache.broadcast(n), live_slots=p + h)
    before = jnp.concatenate([jnp.broadcast_to(state.last_hidden, (n, 1, hidden.shape[-1])), hidden[:, :-1]], axis=1)
    logits = model.project(before)
    picked = jnp.take_along_axis(logits, cont_ids_nh[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return (picked - jax.nn.logsumexp(logits, axis=-1)) * cont_mask_nh.astype(jnp.float32)
