"""Llama 3.x / SmolLM2 in Flax NNX: config, modules, checkpoints, sharding, decoding."""

from spark_jax.model.config import LlamaConfig, RopeScaling, llama3_1_8b, llama3_2_1b, preset, smollm2_135m, tiny
from spark_jax.model.llama import KVCache, Llama

__all__ = [
    "KVCache", "Llama", "LlamaConfig", "RopeScaling", "llama3_1_8b", "llama3_2_1b", "preset",
    "smollm2_135m", "tiny",
]
