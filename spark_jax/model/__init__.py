"""Llama 3.x / SmolLM2 in Flax NNX: config, modules, checkpoints, sharding, decoding.

Submodules load lazily so that ``spark-jax`` commands that never touch the model (the tools)
do not pay for importing jax.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LlamaConfig": "config", "RopeScaling": "config", "llama3_1_8b": "config", "llama3_2_1b": "config",
    "preset": "config", "smollm2_135m": "config", "tiny": "config", "KVCache": "llama", "Llama": "llama",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"spark_jax.model.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'spark_jax.model' has no attribute {name!r}")
