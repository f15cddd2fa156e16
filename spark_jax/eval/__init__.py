"""Evaluation: the policy agent, accuracy per category, tool-selection entropy, reports.

``from spark_jax.eval import extract_answer`` (MMLU-Pro's official answer patterns) is kept for
users; it lives in ``spark_jax.protocol.answers``.
"""

from __future__ import annotations

from spark_jax.protocol.answers import extract_answer

__all__ = ["extract_answer"]
