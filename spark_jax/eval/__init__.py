"""Evaluation: answer extraction, accuracy per category, tool-selection entropy.

Kept import-light: ``from spark_jax.eval import extract_answer`` loads only the regexes.
"""

from __future__ import annotations

__all__ = ["extract_answer"]


def __getattr__(name: str):
    if name == "extract_answer":
        from spark_jax.eval.answers import extract_answer

        return extract_answer
    raise AttributeError(f"module 'spark_jax.eval' has no attribute {name!r}")
