"""``cot``: the ninth action. No tool runs; the model's thought is the step's content."""

from __future__ import annotations

from spark_jax.tools.base import Tool


class ChainOfThought(Tool):
    name = "cot"
    description = "Think step by step in words without calling a tool."
    argument_format = "the reasoning itself, as plain text"

    def _run(self, argument: str, timeout_s: float) -> str:
        return argument
