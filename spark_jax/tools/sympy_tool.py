"""The ``sympy`` tool: symbolic math. The request is built into sympy objects from its AST
(never eval'd), and the whole computation runs inside the Python sandbox, so a request that
explodes (huge powers, hard integrals) ends at the time limit without touching the host."""

from __future__ import annotations

import pathlib

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolResult
from spark_jax.tools.isolation.sandbox import run_python
from spark_jax.tools.python_tool import sandbox_settings

_RUNNER = (pathlib.Path(__file__).parent / "sympy_runner.py").read_text()


class SympyTool(Tool):
    name = "sympy"
    description = action_spec("sympy").description
    argument_format = action_spec("sympy").argument_format

    def default_timeout(self) -> float:
        return self.config.sympy_timeout_s

    def _run(self, argument: str, timeout_s: float) -> ToolResult:
        # repr() of a str is a Python string literal: the request stays data in the program.
        program = f"{_RUNNER}\nmain({argument!r})\n"
        settings = sandbox_settings(self.config, self.config.sympy_preload)
        outcome = run_python(program, timeout_s, settings, prefork=self.config.sandbox_prefork)
        if outcome.ok:
            return ToolResult(True, outcome.stdout.strip(), None, 0.0)
        err = outcome.error_message(timeout_s) or "failed"
        stderr = outcome.stderr.strip()
        if outcome.returncode == 1 and stderr.startswith("error: "):
            err = stderr[len("error: "):]
        elif outcome.returncode == 1 and stderr:
            err = stderr.splitlines()[-1]
        return ToolResult(False, outcome.stdout.strip(), err, 0.0)
