"""``cot``: the ninth action. No tool runs; the model's thought is the step's content."""

from __future__ import annotations

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool


class ChainOfThought(Tool):
    name = "cot"
    description = action_spec("cot").description
    argument_format = action_spec("cot").argument_format

    def _run(self, argument: str, timeout_s: float) -> str:
        return argument
