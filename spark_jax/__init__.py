"""spark-jax: SPaRK tool-diversity RL for language models, in JAX.

Heavy modules (jax, transformers) load lazily so that light entry points such as the tool
sandbox stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_pretrained", "PretrainedModel", "__version__"]


def __getattr__(name: str):
    if name in ("load_pretrained", "PretrainedModel"):
        from spark_jax.model import pretrained  # deferred: `import spark_jax` must not start jax

        return getattr(pretrained, name)
    raise AttributeError(f"module 'spark_jax' has no attribute {name!r}")
