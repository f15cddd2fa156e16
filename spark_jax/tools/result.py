"""What a tool call returns (``ToolResult``), the error for bad model input, and output cutting:
shared by the tools, their base class and the worker pool."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str  # what the model sees (may be empty when ok is False)
    error: str | None  # a message a model can read and act on; None when ok
    elapsed_s: float


class ToolInputError(ValueError):
    """Bad model input: becomes ``ok=False`` with this message."""


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return text[:limit] + f"\n...[output truncated: {dropped} more characters]"
