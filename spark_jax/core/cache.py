"""Where spark-jax keeps its caches on this machine."""

from __future__ import annotations

import os
import pathlib


def cache_root() -> pathlib.Path:
    """``$SPARK_JAX_CACHE``, or ``~/.cache/spark_jax`` when unset: compiled executables, GGUF
    conversions and local copies of remote Stage 1 runs live below it."""
    return pathlib.Path(os.environ.get("SPARK_JAX_CACHE") or pathlib.Path.home() / ".cache" / "spark_jax")
