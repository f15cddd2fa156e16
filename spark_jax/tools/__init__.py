"""Eight offline tools plus chain-of-thought, the nine actions SPaRK's judge scores.

``run_tool(name, argument, timeout_s=None) -> ToolResult`` never raises on model input.
``TOOLS`` maps each name in ``TOOL_NAMES`` to a tool object with ``.name``, ``.description``
(one line) and ``.argument_format`` (for prompts). ``configure(ToolsConfig(...))`` replaces
the configuration ``TOOLS`` and ``run_tool`` use. No jax/torch/transformers imports here.

Where each tool runs (docs/tools.md): calculator, units, finance, chemistry, constants and search
in killable worker processes (tool_worker), python and sympy in a fresh sandbox per call
(sandbox), cot here. Every call returns within its timeout, its output free of control and
escape characters.
"""

from __future__ import annotations

import time

from spark_jax.protocol.action_specs import TOOL_NAMES
from spark_jax.tools.base import Tool, ToolInputError, ToolResult, truncate
from spark_jax.tools.calculator import Calculator
from spark_jax.tools.chemistry import ChemistryTool
from spark_jax.tools.config import ToolsConfig
from spark_jax.tools.constants import ConstantsTool
from spark_jax.tools.cot import ChainOfThought
from spark_jax.tools.finance import FinanceTool
from spark_jax.tools.python_tool import PythonTool
from spark_jax.tools.search import SearchTool
from spark_jax.tools.sympy_tool import SympyTool
from spark_jax.tools.units import UnitsTool

_CLASSES = {
    "calculator": Calculator, "python": PythonTool, "sympy": SympyTool, "units": UnitsTool,
    "chemistry": ChemistryTool, "constants": ConstantsTool, "finance": FinanceTool,
    "search": SearchTool, "cot": ChainOfThought,
}


def build_tools(config: ToolsConfig) -> dict[str, Tool]:
    """Tool objects for ``config``, in TOOL_NAMES order."""
    return {name: _CLASSES[name](config) for name in TOOL_NAMES}


_config = ToolsConfig()
TOOLS: dict[str, Tool] = build_tools(_config)


def configure(config: ToolsConfig) -> None:
    """Uses ``config`` for ``TOOLS`` and ``run_tool`` from now on (``TOOLS`` is updated in place)."""
    global _config
    if not isinstance(config, ToolsConfig):
        raise TypeError(f"expected ToolsConfig, got {type(config).__name__}")
    _config = config
    TOOLS.clear()
    TOOLS.update(build_tools(config))


def current_config() -> ToolsConfig:
    return _config


def run_tool(name: str, argument: str, *, timeout_s: float | None = None) -> ToolResult:
    """Runs tool ``name`` on ``argument``; unknown names and bad input give ``ok=False``."""
    tool = TOOLS.get(name) if isinstance(name, str) else None
    if tool is None:
        start = time.perf_counter()
        return ToolResult(
            ok=False,
            output="",
            error=f"unknown tool {name!r}; valid tools: {', '.join(TOOL_NAMES)}",
            elapsed_s=time.perf_counter() - start,
        )
    return tool.run(argument, timeout_s)


__all__ = [
    "TOOL_NAMES", "TOOLS", "Tool", "ToolResult", "ToolInputError", "ToolsConfig",
    "build_tools", "configure", "current_config", "run_tool", "truncate",
]
