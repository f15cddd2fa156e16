"""The NNX model itself: KV-cache decoding, padding, remat and dtypes (tiny random weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spark_jax.model.config import tiny
from spark_jax.model.cpu_decode import RowSplitLinear, supports_decode_layout, with_decode_layout
from spark_jax.model.factory import abstract_model, init_model
from spark_jax.model.llama import KVCache


@pytest.fixture(scope="module")
def model():
    m = init_model(tiny())
    # Larger weights than the 0.02 init so that position and cache bugs move the logits.
    graphdef, state = nnx.split(m)
    state = jax.tree_util.tree_map(lambda x: x * 5.0 if x.ndim == 2 else x, state)
    return nnx.merge(graphdef, state)


@nnx.jit
def run(m, ids, positions=None, mask=None, cache=None):
    return m(ids, positions, mask, cache)


def _ids(b, t, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(3, 256, (b, t)), jnp.int32)


def test_kv_cache_decoding_equals_full_forward(model):
    ids = _ids(2, 24)
    full, _ = run(model, ids)
    cache = KVCache.empty(model.config, 2, 32)
    pieces = []
    logits, cache = run(model, ids[:, :10], jnp.broadcast_to(jnp.arange(10), (2, 10)), None, cache)
    pieces.append(logits)
    for t in range(10, 24):
        logits, cache = run(model, ids[:, t:t + 1], jnp.full((2, 1), t), None, cache)
        pieces.append(logits)
    stepped = jnp.concatenate(pieces, axis=1)
    assert int(cache.index) == 24
    np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), atol=1e-5, rtol=0)


def test_left_padding_does_not_change_real_token_logits(model):
    ids = _ids(1, 12)
    plain, _ = run(model, ids)
    padded_ids = jnp.concatenate([jnp.zeros((1, 5), jnp.int32), ids], axis=1)
    mask = jnp.concatenate([jnp.zeros((1, 5), bool), jnp.ones((1, 12), bool)], axis=1)
    padded, _ = run(model, padded_ids, None, mask)
    np.testing.assert_allclose(np.asarray(padded[:, 5:]), np.asarray(plain), atol=1e-5, rtol=0)


def test_fully_masked_rows_stay_finite(model):
    mask = jnp.zeros((1, 6), bool)
    logits, _ = run(model, _ids(1, 6), None, mask)
    assert np.isfinite(np.asarray(logits)).all()


def test_remat_gives_same_loss_and_gradients(model):
    graphdef, state = nnx.split(model)
    remat_graphdef, _ = nnx.split(abstract_model(model.config.replace(remat=True)))
    ids = _ids(2, 16)

    def loss(gd, st):
        logits, _ = nnx.merge(gd, st)(ids)
        return jnp.mean(jax.nn.logsumexp(logits, -1))

    grad = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
    l1, g1 = grad(graphdef, state)
    l2, g2 = grad(remat_graphdef, state)
    assert abs(float(l1) - float(l2)) < 1e-6
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bfloat16_compute_is_close_to_float32(model):
    graphdef, state = nnx.split(model)
    bf16 = nnx.merge(nnx.split(abstract_model(model.config.replace(dtype="bfloat16")))[0], state)
    ids = _ids(2, 16)
    ref, _ = run(model, ids)
    got, _ = run(bf16, ids)
    assert got.dtype == jnp.float32  # logits are always returned in float32
    assert float(jnp.max(jnp.abs(got - ref))) < 0.25 * float(jnp.max(jnp.abs(ref)))


def test_bfloat16_params_are_stored_in_bfloat16():
    m = init_model(tiny(param_dtype="bfloat16", dtype="bfloat16"))
    assert m.layers[0].self_attn.q_proj.kernel[...].dtype == jnp.bfloat16
    logits, _ = run(m, _ids(1, 4))
    assert logits.dtype == jnp.float32


def test_tied_embeddings_have_no_lm_head():
    m = init_model(tiny(tie_word_embeddings=True))
    assert m.lm_head is None
    logits, _ = run(m, _ids(1, 4))
    assert logits.shape == (1, 4, 256)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_decode_layout_gives_the_same_decode_step(model, tied, blocks):
    """``with_decode_layout`` (row-split, transposed weights for the CPU decode loop) changes
    the layout only: a cached decode step gives the same logits and cache (float32, 1e-5)."""
    m = model
    if tied:
        m = init_model(tiny(tie_word_embeddings=True))
        graphdef, state = nnx.split(m)
        m = nnx.merge(graphdef, jax.tree_util.tree_map(lambda x: x * 5.0 if x.ndim == 2 else x, state))
    ids = _ids(3, 9)
    _, cache = run(m, ids[:, :8], jnp.broadcast_to(jnp.arange(8), (3, 8)), None, KVCache.empty(m.config, 3, 12))
    step = (ids[:, 8:], jnp.full((3, 1), 8), None, cache)
    want, want_cache = run(m, *step)
    split = with_decode_layout(m, blocks)
    assert isinstance(split.layers[0].mlp.down_proj, RowSplitLinear)
    assert len(split.layers[0].mlp.gate_proj.parts) == blocks
    got, got_cache = run(split, *step)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(got_cache.keys[1]), np.asarray(want_cache.keys[1]), atol=1e-5, rtol=0)
    assert isinstance(m.layers[0].mlp.down_proj, nnx.Linear)  # the original model is untouched


def test_decode_layout_refuses_models_with_adapters(model):
    from spark_jax.rl.adapters import LoraConfig, apply_lora

    lora = apply_lora(model, LoraConfig(rank=2, alpha=4.0, target_modules=r".*(q_proj|down_proj)$"))
    assert supports_decode_layout(model) and not supports_decode_layout(lora)
    with pytest.raises(ValueError, match="adapters or quantised"):
        with_decode_layout(lora, 2)


def _padded_batch(t: int, pad: int):
    """Two rows of t tokens; the second is left-padded by ``pad``."""
    ids = _ids(2, t, seed=3)
    mask = jnp.ones((2, t), bool).at[1, :pad].set(False)
    return ids, mask


@pytest.mark.parametrize("t", [256, 640])  # 4 blocks of 64, 5 blocks of 128
def test_causal_blocks_equal_one_block(model, monkeypatch, t):
    """Cache-free passes of >= 256 tokens attend in causal query blocks, each reading only the
    keys up to its end; that must change nothing at real tokens."""
    import spark_jax.model.attention as attention

    assert attention.causal_blocks(t) == t // min(128, t // 4)
    ids, mask = _padded_batch(t, pad=37)
    forward = lambda: nnx.jit(lambda m, i, k: m(i, None, k)[0])(model, ids, mask)  # fresh trace
    blocked = forward()
    monkeypatch.setattr(attention, "causal_blocks", lambda t: 0)  # one piece over all keys
    whole = forward()
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(blocked)[real], np.asarray(whole)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("t", [20, 256])
def test_prefill_with_live_slots_equals_reading_the_whole_cache(model, t):
    """``live_slots`` makes attention skip the empty room of the cache (and, at live_slots == T,
    attend in causal blocks): same hidden states, same cache, same next decode step."""
    ids, mask = _padded_batch(t, pad=5)
    positions = jnp.maximum(jnp.cumsum(mask, -1) - 1, 0)

    @nnx.jit(static_argnames="live")
    def prefill_then_step(m, live):
        cache = KVCache.empty(m.config, 2, t + 8)
        hidden, cache = m.hidden_states(ids, positions, mask, cache, live_slots=live)
        logits, cache = m(ids[:, :1], positions[:, -1:] + 1, None, cache)
        return hidden, cache, logits

    plain, sliced = prefill_then_step(model, None), prefill_then_step(model, t)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(sliced[0])[real], np.asarray(plain[0])[real], atol=1e-5, rtol=0)
    valid = np.asarray(plain[1].valid_bs)  # padding slots hold garbage that nothing reads
    for a, b in zip(sliced[1].keys, plain[1].keys):
        np.testing.assert_allclose(np.asarray(a).transpose(0, 3, 1, 2)[valid], np.asarray(b).transpose(0, 3, 1, 2)[valid],
                                   atol=1e-5, rtol=0)
    for a, b in zip(sliced[1].values, plain[1].values):
        np.testing.assert_allclose(np.asarray(a).transpose(0, 2, 1, 3)[valid], np.asarray(b).transpose(0, 2, 1, 3)[valid],
                                   atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(sliced[2]), np.asarray(plain[2]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("live, with_cache", [(4, True), (40, True), (10, False)])
def test_live_slots_out_of_range_is_refused(model, live, with_cache):
    ids = _ids(1, 10)
    cache = KVCache.empty(model.config, 1, 16) if with_cache else None
    with pytest.raises(ValueError, match="live_slots"):
        model.hidden_states(ids, jnp.arange(10)[None], None, cache, live_slots=live)
