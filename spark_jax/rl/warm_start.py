"""Warm start: a train run that begins from another run's trainable weights (its adapters).

``init_from`` names the source run; ``init_step`` its checkpoint (0: the latest, resolved and
recorded in the new run's config, so a resume finds the same source step or is refused). The
source must share every setting that shapes or interprets those weights (``MUST_MATCH``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import orbax.checkpoint as ocp

from spark_jax.core.config_io import ConfigError, to_dict
from spark_jax.core.storage import run_path
from spark_jax.rl.checkpointing import RunCheckpoints
from spark_jax.rl.config import TrainConfig, read_run_config

log = logging.getLogger(__name__)

# Settings that decide the trainable weights' shapes and meaning.
MUST_MATCH = ("model", "full_finetune", "param_dtype", "lora.rank", "lora.alpha", "lora.target_modules",
              "lora.qlora", "lora.qlora_tile_size")


def _get(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def check_compatible(cfg: TrainConfig, source: TrainConfig) -> None:
    """Raises ConfigError naming the first setting that differs from the source run's."""
    ours, theirs = to_dict(cfg), to_dict(source)
    for key in MUST_MATCH:
        if _get(ours, key) != _get(theirs, key):
            raise ConfigError(f"init_from {cfg.init_from}: {key} is {_get(theirs, key)!r} there but "
                              f"{_get(ours, key)!r} here; a warm start needs the same {key}")


def resolve_warm_start(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``init_step`` set to the source checkpoint it will load (unchanged without
    ``init_from``); checks that the source run is compatible and holds that step."""
    if not cfg.init_from:
        return cfg
    source = read_run_config(cfg.init_from)
    check_compatible(cfg, source)
    ckpts = RunCheckpoints(run_path(cfg.init_from) / "checkpoints", every=1, keep=1, async_save=False)
    try:
        steps = ckpts.all_steps()
    finally:
        ckpts.close()
    if not steps:
        raise ConfigError(f"init_from {cfg.init_from}: no committed checkpoint")
    step = cfg.init_step or max(steps)
    if step not in steps:
        raise ConfigError(f"init_from {cfg.init_from}: no checkpoint at init_step {step} (it holds {sorted(steps)})")
    return dataclasses.replace(cfg, init_step=step)


def source_params(cfg: TrainConfig, template: Any) -> Any:
    """The source run's trainable policy weights at ``cfg.init_step``, in ``template``'s
    structure, dtypes and shardings (``template``: this run's trainable policy state)."""
    path = run_path(cfg.init_from) / "checkpoints" / str(cfg.init_step) / "state"
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), template)
    item = {"params": {"policy": abstract}}
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    with ocp.PyTreeCheckpointer() as ckptr:
        restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                                                   partial_restore=True))
    return restored["params"]["policy"]
