"""orbax checkpoints of a training run: train state + Grain iterator position, saved together.

Layout: ``RUN/checkpoints/<step>/{state,data}``; RUN may be a ``gs://`` URL. In a multi-process
run every process calls save/restore: orbax writes each process's shards and commits once. orbax writes each checkpoint into a temporary
directory and renames it on commit, so a process killed mid-save (even with SIGKILL) leaves
the previous committed step as the latest restorable one; the half-written temporary
directory is ignored and cleaned up by the next manager.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from spark_jax.core.storage import run_path

log = logging.getLogger(__name__)


class RunCheckpoints:
    def __init__(self, directory: str | pathlib.Path, *, every: int, keep: int, async_save: bool = True):
        self.directory = run_path(directory)  # local (absolute) or gs://; orbax writes both
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=("state", "data"), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict[str, Any]) -> bool:
        """Starts saving ``step`` (the caller decides the cadence); returns at once when async."""
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            force=True,
        )
        if saved:
            log.info("checkpoint for step %d started (%s)", step, self.directory)
        return saved

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["data"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
