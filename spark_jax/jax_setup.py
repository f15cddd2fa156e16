"""Process-wide JAX settings shared by the CLI and the tests."""

from __future__ import annotations

import os
import pathlib


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Persists compiled executables across processes (``$SPARK_JAX_CACHE/xla`` by default), so a
    second run of the same shapes skips XLA compilation. Set through the environment, so it
    costs no jax import (light commands stay fast) and child processes inherit it."""
    root = pathlib.Path(
        path or os.environ.get("SPARK_JAX_CACHE", pathlib.Path.home() / ".cache" / "spark_jax")
    ) / "xla"
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if "jax" in __import__("sys").modules:  # already imported: its config was read at import time
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return root
