"""Building models without wasted memory: abstract shapes, and random init placed on a mesh."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh

from spark_jax.model.config import LlamaConfig
from spark_jax.model.llama import Llama
from spark_jax.model.sharding import state_shardings


def abstract_model(cfg: LlamaConfig) -> Llama:
    """The model's structure with ShapeDtypeStruct leaves: no memory, no random init."""
    return nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))


def init_model(cfg: LlamaConfig, seed: int = 0, mesh: Mesh | None = None) -> Llama:
    """A randomly initialised model, built in one jitted program; with a mesh each parameter is
    created directly in its shards (an 8B-shaped model never exists unsharded on one device)."""
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    out_shardings = None if mesh is None else state_shardings(abs_state, mesh)

    @jax.jit
    def make():
        return nnx.split(Llama(cfg, rngs=nnx.Rngs(seed)))[1]

    if out_shardings is not None:
        make = jax.jit(make, out_shardings=out_shardings)
    return nnx.merge(graphdef, make())
