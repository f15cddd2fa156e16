"""Per-step advantages that depend neither on the batch's composition nor on the step's kind.

A step's return G_t (``span_return``, the discounted sum of its trajectory's later rewards,
computed when the data is read) is standardised within its *group*: its step index t
(``norm_groups: step``, the default) or its kind, tool/cot apart from answer (``kind``).
Groups keep running statistics across batches, an exponentially forgotten count, sum and sum
of squares (``norm_decay`` per batch), stored in the train state and so in every checkpoint.
Tool steps (returns about 1-4) and answer steps (0 or 1) are then each compared with their own
kind, not with each other, and a batch of one record still gets a non-zero advantage once its
group has history.

Shapes: B rows, S spans per row; ``GROUPS`` groups (step indices beyond it share the last).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from spark_jax.data.packing import KIND_ANSWER

GROUPS = 16


def init_stats() -> dict[str, jax.Array]:
    """Empty running statistics: forgotten count, sum and sum of squares per group [GROUPS]."""
    # three arrays, not one shared: the train state is donated buffer by buffer
    return {k: jnp.zeros((GROUPS,), jnp.float32) for k in ("count", "sum", "sumsq")}


def group_ids(kind_bs: jax.Array, step_bs: jax.Array, by: str) -> jax.Array:
    """Group of each span [B, S] int32: step index (capped) or 0 tool/cot, 1 answer."""
    if by == "step":
        return jnp.minimum(step_bs, GROUPS - 1).astype(jnp.int32)
    if by == "kind":
        return (kind_bs == KIND_ANSWER).astype(jnp.int32)
    raise ValueError(f"unknown advantage group {by!r} (use 'step' or 'kind')")


def update_stats(stats: dict[str, jax.Array], x_bs: jax.Array, group_bs: jax.Array, mask_bs: jax.Array,
                 decay: float) -> dict[str, jax.Array]:
    """Forget old batches by ``decay`` in the groups this batch holds, then add its spans."""
    onehot = jax.nn.one_hot(group_bs, GROUPS, dtype=jnp.float32) * mask_bs[..., None]  # [B, S, G]
    x = x_bs.astype(jnp.float32)[..., None]
    count = onehot.sum((0, 1))
    present = count > 0
    keep = jnp.where(present, decay, 1.0)
    return {
        "count": keep * stats["count"] + count,
        "sum": keep * stats["sum"] + (onehot * x).sum((0, 1)),
        "sumsq": keep * stats["sumsq"] + (onehot * x * x).sum((0, 1)),
    }


def normalise(x_bs: jax.Array, group_bs: jax.Array, stats: dict[str, jax.Array], eps: float) -> jax.Array:
    """(x - mean_g) / (std_g + eps) with each span's group statistics [B, S]."""
    n = jnp.maximum(stats["count"], 1e-12)
    mean = stats["sum"] / n
    var = jnp.maximum(stats["sumsq"] / n - mean * mean, 0.0)
    mu, sd = mean[group_bs], jnp.sqrt(var)[group_bs]
    return (x_bs.astype(jnp.float32) - mu) / (sd + eps)


def span_advantages(return_bs: jax.Array, kind_bs: jax.Array, step_bs: jax.Array, mask_bs: jax.Array,
                    stats: dict[str, jax.Array], *, method: str, groups: str, decay: float, eps: float,
                    value_bs: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(advantage per span [B, S], updated statistics); 0 on padding spans.

    ``running_norm``: G standardised in its group with the statistics updated by this batch;
    ``raw``: G itself; ``value``: G - V(s_t) (no gradient into the critic). The statistics are
    updated under every method, so switching methods on resume finds them warm.
    """
    gid = group_ids(kind_bs, step_bs, groups)
    stats = update_stats(stats, return_bs, gid, mask_bs, decay)
    g = return_bs.astype(jnp.float32)
    if method == "running_norm":
        adv = normalise(g, gid, stats, eps)
    elif method == "raw":
        adv = g
    elif method == "value":
        if value_bs is None:
            raise ValueError("advantage 'value' needs the critic's values")
        adv = g - jax.lax.stop_gradient(value_bs.astype(jnp.float32))
    else:
        raise ValueError(f"unknown advantage {method!r} (use running_norm, raw or value)")
    return adv * mask_bs, stats
