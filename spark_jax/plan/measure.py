"""XLA's own memory figures for the train step of a config: compile (no execution, no weights)
and read ``compiled.memory_analysis()``. Needs as many devices as the config's mesh."""

from __future__ import annotations

import jax
import numpy as np

from spark_jax.data.pipeline import batch_shapes
from spark_jax.model.config import LlamaConfig
from spark_jax.model.sharding import batch_sharding, make_mesh, replicated, state_shardings
from spark_jax.plan.memory import PLANNED_HEADER_TOKENS, abstract_run, planned_spans
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.optim import lr_schedule
from spark_jax.rl.steps import BATCH_KEYS, make_train_step


def _with_sharding(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def compiled_step_memory(cfg: TrainConfig, arch: LlamaConfig, seq: int) -> dict[str, int]:
    """Per-device bytes XLA reserves for one train step at batch length ``seq``.

    ``peak`` = arguments + outputs - aliased (donated state) + temporaries. Arguments are the
    train state, the frozen weights, the reference and the batch.
    """
    n = int(np.prod(cfg.mesh_shape))
    if n > len(jax.devices()):
        raise ValueError(f"mesh {tuple(cfg.mesh_shape)} needs {n} devices; {len(jax.devices())} are visible")
    mesh = make_mesh(cfg.mesh_shape, jax.devices()[:n])
    run = abstract_run(cfg, arch)
    # build_models (inside abstract_run) switches remat on after the adapters exist, as the trainer does
    state_sh = state_shardings(run.state, mesh)
    frozen_sh = state_shardings(run.frozen, mesh)
    ref_sh = None if run.ref is None else state_shardings(run.ref, mesh)
    bsh = batch_sharding(mesh, (cfg.batch_size,))
    # the planner's worst case: the longest action bucket (at most seq) at every row
    action = min(seq, max(cfg.action_buckets))

    # the planner's states per row and header tokens, so both see the same header block
    shapes = batch_shapes(cfg.batch_size, seq, action, planned_spans(cfg), PLANNED_HEADER_TOKENS)
    batch = {k: jax.ShapeDtypeStruct(shapes[k][0], shapes[k][1], sharding=bsh) for k in BATCH_KEYS}
    total = cfg.steps * cfg.updates_per_step
    step = make_train_step(cfg, run.policy_graphdef, run.critic_graphdef, run.optimizer, lr_schedule(cfg.optim, total))
    jitted = jax.jit(step, in_shardings=(state_sh, frozen_sh, ref_sh, {k: bsh for k in BATCH_KEYS}),
                     out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))
    ref = None if run.ref is None else _with_sharding(run.ref, ref_sh)
    compiled = jitted.lower(_with_sharding(run.state, state_sh), _with_sharding(run.frozen, frozen_sh), ref,
                            batch).compile()
    m = compiled.memory_analysis()
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp")}
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out

