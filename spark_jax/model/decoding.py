"""How ``PretrainedModel.generate`` runs a padded batch: one strategy, chosen once per model.

* ``FusedDecoder``: prefill and the token loop in one executable per shape bucket, with explicit
  shardings (accelerators, meshes, models with adapters or quantised weights).
* ``SplitDecoder``: unsharded CPU; the prompt prefill and the token loop on row-split weights
  (``cpu_decode.with_decode_layout``) as two executables, each with its best dot backend, the
  cache kept on the device and donated to the loop.

Both run the shared prefix (a system prompt) once when the batch has one.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spark_jax.model import generate as gen
from spark_jax.model.sharding import batch_sharding, replicated


def _decode(graphdef, nb, state, ids_bp, mask_bp, limit, temperature, rng, eos_ids):
    return gen.decode(nnx.merge(graphdef, state), ids_bp, mask_bp, limit, temperature, rng, eos_ids,
                      max_new_tokens=nb)


def _decode_with_prefix(graphdef, nb, state, prefix_1c, ids_bp, mask_bp, limit, temperature, rng, eos_ids):
    return gen.decode_with_prefix(nnx.merge(graphdef, state), prefix_1c, ids_bp, mask_bp, limit, temperature, rng,
                                  eos_ids, max_new_tokens=nb)


def _prefill(graphdef, nb, state, ids_bp, mask_bp):
    return gen.prefill(nnx.merge(graphdef, state), ids_bp, mask_bp, max_new_tokens=nb)


def _prefill_with_prefix(graphdef, nb, state, prefix_1c, ids_bp, mask_bp):
    return gen.prefill_with_prefix(nnx.merge(graphdef, state), prefix_1c, ids_bp, mask_bp, max_new_tokens=nb)


def _sample_loop(graphdef, nb, blocks, state, cache, last_hidden, next_pos, limit, temperature, rng, eos_ids):
    prefilled = gen.Prefilled(last_hidden, cache, next_pos)
    out, cache = gen.sample_loop(nnx.merge(graphdef, state), prefilled, limit, temperature, rng, eos_ids,
                                 max_new_tokens=nb, weight_blocks=blocks, return_cache=True)
    return out, cache  # returned so the donated prefill cache is updated in place


class FusedDecoder:
    """One executable per (batch, prefix, prompt, new-token) bucket."""

    def run(self, pm: Any, prefix: np.ndarray | None, ids: np.ndarray, mask: np.ndarray, scalars: tuple,
            nb: int) -> jax.Array:
        """New tokens [B, nb] of the left-padded prompts ``ids`` [B, P] (after ``prefix`` [1, C])."""
        (bb, pb), n_eos = ids.shape, len(scalars[3])
        rep = replicated(pm.mesh) if pm.mesh is not None else None
        rows = lambda: batch_sharding(pm.mesh, (bb, pb))  # noqa: E731
        out_spec = lambda: batch_sharding(pm.mesh, (bb, nb))  # noqa: E731
        if prefix is None:
            fn = pm._jit(("generate", bb, pb, nb, n_eos), functools.partial(_decode, pm.graphdef, nb),
                         lambda: (pm._state_shardings(), rows(), rows(), rep, rep, rep, rep), out_spec)
            return fn(pm.state, pm._put(ids), pm._put(mask), *scalars)
        shared = prefix.shape[1]
        fn = pm._jit(("generate_prefix", bb, shared, pb, nb, n_eos),
                     functools.partial(_decode_with_prefix, pm.graphdef, nb),
                     lambda: (pm._state_shardings(), rep, rows(), rows(), rep, rep, rep, rep), out_spec)
        prefix_arr = jnp.asarray(prefix) if pm.mesh is None else jax.device_put(prefix, rep)
        return fn(pm.state, prefix_arr, pm._put(ids), pm._put(mask), *scalars)


class SplitDecoder:
    """Prefill, then the token loop on weights split into ``blocks`` row blocks (unsharded CPU)."""

    def __init__(self, blocks: int):
        self.blocks = blocks

    def run(self, pm: Any, prefix: np.ndarray | None, ids: np.ndarray, mask: np.ndarray, scalars: tuple,
            nb: int) -> jax.Array:
        (bb, pb), shared = ids.shape, 0 if prefix is None else prefix.shape[1]
        if prefix is None:
            prefill = pm._jit(("prefill", bb, pb, nb), functools.partial(_prefill, pm.graphdef, nb), None, None)
            prefilled = prefill(pm.state, ids, mask)
        else:
            prefill = pm._jit(("prefill_prefix", bb, shared, pb, nb),
                              functools.partial(_prefill_with_prefix, pm.graphdef, nb), None, None)
            prefilled = prefill(pm.state, prefix, ids, mask)
        loop = pm._jit(("decode_loop", bb, shared + pb + nb, nb, len(scalars[3]), self.blocks),
                       functools.partial(_sample_loop, pm.graphdef, nb, self.blocks), None, None, donate_argnums=(1,))
        return loop(pm.state, prefilled.cache, prefilled.last_hidden, prefilled.next_pos, *scalars)[0]


def choose_decoder(weight_blocks: int) -> FusedDecoder | SplitDecoder:
    """``SplitDecoder`` when the model decodes on row-split weights (``weight_blocks`` > 0)."""
    return SplitDecoder(weight_blocks) if weight_blocks else FusedDecoder()
