"""The ``python`` tool: model-written Python in the sandbox (see sandbox.py)."""

from __future__ import annotations

from spark_jax.protocol.action_specs import action_spec
from spark_jax.tools.base import Tool, ToolResult
from spark_jax.tools.config import ToolsConfig
from spark_jax.tools.isolation.sandbox import run_python
from spark_jax.tools.isolation.sandbox_types import SandboxSettings


def sandbox_settings(config: ToolsConfig, preload: tuple[str, ...]) -> SandboxSettings:
    return SandboxSettings(
        memory_mb=config.sandbox_memory_mb,
        disk_mb=config.sandbox_disk_mb,
        max_processes=config.sandbox_max_processes,
        max_open_files=config.sandbox_max_open_files,
        capture_bytes=config.sandbox_capture_bytes,
        preload=tuple(preload),
        uid_range=tuple(config.sandbox_uid_range),
        mode=config.resolved_sandbox_mode(),
    )


def combine_streams(stdout: str, stderr: str) -> str:
    stdout, stderr = stdout.rstrip("\n"), stderr.rstrip("\n")
    if stderr and stdout:
        return f"{stdout}\n[stderr]\n{stderr}"
    return stdout or (f"[stderr]\n{stderr}" if stderr else "")


class PythonTool(Tool):
    name = "python"
    description = action_spec("python").description
    argument_format = action_spec("python").argument_format

    def default_timeout(self) -> float:
        return self.config.python_timeout_s

    def _run(self, argument: str, timeout_s: float) -> ToolResult:
        settings = sandbox_settings(self.config, self.config.python_preload)
        outcome = run_python(argument, timeout_s, settings, prefork=self.config.sandbox_prefork)
        text = combine_streams(outcome.stdout, outcome.stderr)
        if outcome.ok:
            return ToolResult(True, text if text else "(no output; use print())", None, 0.0)
        return ToolResult(False, text, outcome.error_message(timeout_s), 0.0)
