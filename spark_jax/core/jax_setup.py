"""Process-wide JAX settings shared by the CLI and the tests."""

from __future__ import annotations

import importlib.util
import os
import pathlib

from spark_jax.core.cache import cache_root


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Persists compiled executables across processes (``$SPARK_JAX_CACHE/xla`` by default), so a
    second run of the same shapes skips XLA compilation. Set through the environment, so it
    costs no jax import (light commands stay fast) and child processes inherit it."""
    root = (pathlib.Path(path) if path else cache_root()) / "xla"
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(root))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    if "jax" in __import__("sys").modules:  # already imported: its config was read at import time
        # deferred: this module must not start jax; here it is loaded already
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return root


# XLA flags worth having on NVIDIA GPUs (JAX's GPU performance tips, NVIDIA JAX-Toolbox defaults):
# the latency-hiding scheduler overlaps FSDP all-gathers / reduce-scatters with compute.
GPU_XLA_FLAGS = ("--xla_gpu_enable_latency_hiding_scheduler=true",)
# XLA preallocates 75% of GPU memory by default; the memory planner budgets 90%.
GPU_MEM_FRACTION = "0.9"


def cuda_plugin_installed() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


def configure_gpu(environ: dict | None = None, *, cuda_available: bool | None = None) -> list[str]:
    """Adds ``GPU_XLA_FLAGS`` to ``XLA_FLAGS`` (a flag the user set, to any value, is kept as is)
    and sets ``XLA_PYTHON_CLIENT_MEM_FRACTION`` unless set, when this process will use CUDA: a
    jax CUDA plugin is installed and ``JAX_PLATFORMS`` does not exclude it. Must run before jax
    initialises its backends. ``SPARK_JAX_NO_GPU_FLAGS=1`` turns it off. Returns the flags added."""
    env = os.environ if environ is None else environ
    if env.get("SPARK_JAX_NO_GPU_FLAGS") == "1":
        return []
    platforms = env.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu")):
        return []
    if not (cuda_plugin_installed() if cuda_available is None else cuda_available):
        return []
    current = env.get("XLA_FLAGS", "")
    present = {tok.split("=", 1)[0] for tok in current.split()}
    added = [flag for flag in GPU_XLA_FLAGS if flag.split("=", 1)[0] not in present]
    if added:
        env["XLA_FLAGS"] = " ".join([current, *added]).strip()
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", GPU_MEM_FRACTION)
    return added
