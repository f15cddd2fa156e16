"""``attend``: every path it picks equals one-piece softmax attention at the real queries."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spark_jax.model import attention


def _inputs(t: int, s: int, seed: int = 0):
    b, k, g, e = 2, 2, 3, 8
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    q = jax.random.normal(keys[0], (b, k, g, t, e))
    kk = jax.random.normal(keys[1], (b, k, e, s))
    v = jax.random.normal(keys[2], (b, k, s, e))
    q_slot = (s - t) + jnp.arange(t)
    mask = jnp.broadcast_to(jnp.arange(s)[None, :] <= q_slot[:, None], (b, t, s))
    mask = mask.at[1, :, : s // 7].set(False)  # left padding in the second row
    return q, kk, v, mask


@pytest.mark.parametrize("t,s,keys_are_queries,path", [
    (512, 512, True, "causal blocks"),   # causal_blocks(512) = 4
    (1024, 1100, False, "query chunks"),  # past QUERY_CHUNK and a multiple of it, keys != queries
    (100, 300, False, "one piece"),
])
def test_every_path_equals_one_piece(t, s, keys_are_queries, path):
    q, k, v, mask = _inputs(t, s)
    whole = attention._attend(q, k, v, mask, 8)
    got = attention.attend(q, k, v, mask, 8, keys_are_queries=keys_are_queries)
    real = np.asarray(mask.any(-1))  # queries with at least one key to read
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2, 4)[real],
                               np.asarray(whole).transpose(0, 3, 1, 2, 4)[real], atol=2e-5, rtol=0)


def test_attend_picks_the_path_by_shape(monkeypatch):
    calls = []
    monkeypatch.setattr(attention, "_attend_causal_blocks", lambda *a: calls.append("blocks") or a[0])
    monkeypatch.setattr(attention, "_attend_query_chunks", lambda *a: calls.append("chunks") or a[0])
    q, k, v, mask = _inputs(1024, 1024)
    attention.attend(q, k, v, mask, 8, keys_are_queries=True)
    attention.attend(q, k, v, mask, 8, keys_are_queries=False)
    assert calls == ["blocks", "chunks"]
