"""XLA:CPU tuning that inference opts into: the row-split weight layout of the token-by-token
decode loop, and the dot backend each compiled entry point uses. Accelerators and meshes use
neither (``default_decode_weight_blocks`` is 0 there and ``compiler_options`` gives None)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from spark_jax.model.llama import Llama

# On CPU, products with many token rows (prompt prefill: hidden states with or without a cache)
# compile their dots with Eigen, which runs each on all cores; YNNPACK is better for the LM head
# over many rows and for the decode loop's row-split weights (``with_decode_layout``), whose
# blocks YNNPACK runs one per core (benchmarks/model_throughput.py times prefill and decode).
EIGEN_DOTS_KINDS = ("hidden", "prefill", "prefill_prefix", "generate", "generate_prefix", "session_extend")


def compiler_options(kind: str) -> dict[str, str] | None:
    """XLA options per entry point (see ``EIGEN_DOTS_KINDS``)."""
    if kind in EIGEN_DOTS_KINDS and jax.default_backend() == "cpu":
        return {"xla_cpu_experimental_ynn_fusion_type": ""}
    return None


def default_decode_weight_blocks(mesh: Mesh | None) -> int:
    """Row blocks per weight for the decode loop: one per core on an unsharded CPU model, 0
    (plain layout) elsewhere: accelerators pick their own layouts, and meshes shard the weights."""
    if mesh is not None or jax.default_backend() != "cpu":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


class RowSplitLinear(nnx.Module):
    """A bias-free linear map whose weight is held as ``len(parts)`` row blocks of the
    transposed kernel, each [N_i, D_in]; for products with a few token rows (decode steps).

    XLA:CPU (YNNPACK) runs a few-row product on one thread, as one pass over the weight, and at
    about twice the memory bandwidth when the weight is the left operand. Independent blocks
    run on different threads, so a step streams its weights from memory on every core.
    """

    def __init__(self, parts: tuple[jax.Array, ...]):
        self.parts = nnx.data(tuple(parts))

    @classmethod
    def from_kernel(cls, kernel_io: jax.Array, parts: int) -> "RowSplitLinear":
        """From a kernel [D_in, N]."""
        return cls(row_blocks(kernel_io.T, parts))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., D_in] -> [..., N] in the weight's dtype."""
        x = x.astype(self.parts[0].dtype)
        out = jnp.concatenate([jnp.einsum("...d,nd->n...", x, w) for w in self.parts], axis=0)
        return jnp.moveaxis(out, 0, -1)


def row_blocks(weight_nd: jax.Array, parts: int) -> tuple[jax.Array, ...]:
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
        copy.lm_head = nnx.data(RowSplitLinear(row_blocks(table, parts)))  # the tied table is [V, D] already
    else:
        copy.lm_head = RowSplitLinear.from_kernel(copy.lm_head.kernel[...].astype(dtype), parts)
    return copy
