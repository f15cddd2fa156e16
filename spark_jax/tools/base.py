"""The tool interface: a name, a one-line description, an argument format for prompts, and
``run(argument, timeout_s) -> ToolResult`` which never raises on model input. Output and errors
leave ``run`` without control or escape characters (sanitize.clean_text), cut to size.
``ToolResult``, ``ToolInputError`` and ``truncate`` live in ``result`` and are re-exported here."""

from __future__ import annotations

import logging
import time

from spark_jax.tools.config import ToolsConfig
from spark_jax.tools.isolation.tool_worker import run_in_worker
from spark_jax.tools.result import ToolInputError, ToolResult, truncate
from spark_jax.tools.sanitize import clean_text

log = logging.getLogger(__name__)


class Tool:
    """Base class: subclasses set the three strings and implement ``_run``.

    ``_run`` returns the output text, or raises ``ToolInputError`` (or any exception) for a
    failure; ``run`` turns every outcome into a ``ToolResult``.
    """

    name: str = ""
    description: str = ""
    argument_format: str = ""
    in_worker: bool = False  # run in a killable worker process (parses model input in-process)

    def __init__(self, config: ToolsConfig) -> None:
        self.config = config

    def default_timeout(self) -> float:
        return self.config.default_timeout_s

    def run(self, argument: str, timeout_s: float | None = None) -> ToolResult:
        """Runs the tool: in a worker process (``in_worker`` tools, see tool_worker), else here."""
        if not self.in_worker:
            return self.run_here(argument, timeout_s)
        start = time.perf_counter()
        try:
            timeout = self._checked_timeout(argument, timeout_s)
        except ToolInputError as e:
            return self._result(False, "", str(e), start)
        try:
            r = run_in_worker(self, argument, timeout)  # already cleaned and cut by the worker
        except Exception as e:  # noqa: BLE001 - run_tool never raises, even under host pressure
            log.warning("tool %s: the worker path failed", self.name, exc_info=True)
            return self._result(False, "", f"the {self.name} tool could not run: {type(e).__name__}: {e}", start)
        return ToolResult(r.ok, clean_text(r.output), None if r.error is None else clean_text(r.error),
                          time.perf_counter() - start)

    def run_here(self, argument: str, timeout_s: float | None = None) -> ToolResult:
        """Runs the tool in this process (what a worker does; nothing stops a runaway input)."""
        start = time.perf_counter()
        try:
            timeout = self._checked_timeout(argument, timeout_s)
            result = self._run(argument.strip(), timeout)
        except ToolInputError as e:
            return self._result(False, "", str(e), start)
        except RecursionError:
            return self._result(False, "", "input is nested too deeply", start)
        except MemoryError:
            return self._result(False, "", "input needs too much memory", start)
        except Exception as e:  # a tool must never raise on model input
            log.debug("tool %s failed on %r", self.name, argument[:200], exc_info=True)
            return self._result(False, "", f"{type(e).__name__}: {e}", start)
        if isinstance(result, ToolResult):
            return self._finish(result, start)
        return self._result(True, str(result), None, start)

    def warm(self) -> None:
        """Loads what the first call would (a tool worker calls this before serving)."""

    def _checked_timeout(self, argument, timeout_s) -> float:
        if not isinstance(argument, str):
            raise ToolInputError(f"argument must be text, got {type(argument).__name__}")
        if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ToolInputError(f"timeout_s must be a positive number, got {timeout_s!r}")
        if len(argument) > self.config.max_argument_chars:
            raise ToolInputError(
                f"argument is {len(argument)} characters; the limit is "
                f"{self.config.max_argument_chars}"
            )
        if not argument.strip() and self.name != "cot":
            raise ToolInputError(f"empty argument; expected: {self.argument_format}")
        return float(timeout_s) if timeout_s is not None else self.default_timeout()

    def _finish(self, result: ToolResult, start: float) -> ToolResult:
        return self._result(result.ok, result.output, result.error, start)

    def _result(self, ok: bool, output: str, error: str | None, start: float) -> ToolResult:
        cap = self.config.max_output_chars
        return ToolResult(
            ok=ok,
            output=truncate(clean_text(output), cap),
            error=None if error is None else truncate(clean_text(error), cap),
            elapsed_s=time.perf_counter() - start,
        )

    def _run(self, argument: str, timeout_s: float) -> str | ToolResult:
        raise NotImplementedError
