"""Configuration of the tools and their sandbox."""

from __future__ import annotations

import dataclasses
import os
import warnings

# Old field name -> new field name, in the order of the InitVars at the end of ToolsConfig.
RENAMED = {
    "python_memory_mb": "sandbox_memory_mb",
    "python_disk_mb": "sandbox_disk_mb",
    "python_max_processes": "sandbox_max_processes",
    "python_max_open_files": "sandbox_max_open_files",
    "python_capture_bytes": "sandbox_capture_bytes",
    "prefork": "sandbox_prefork",
}


@dataclasses.dataclass(frozen=True)
class ToolsConfig:
    """Limits and paths for the eight tools.

    Times are seconds of wall clock, sizes are characters (output) or MiB (memory, disk).
    """

    default_timeout_s: float = 10.0  # per call, for tools without their own timeout
    python_timeout_s: float = 10.0  # wall clock for the python tool; CPU limit follows it
    sympy_timeout_s: float = 10.0
    max_output_chars: int = 4000  # what a tool returns to the model; longer output is cut
    max_argument_chars: int = 20000  # longer arguments are refused, not run
    # The sandbox that runs python and sympy: limits of each call's confined process.
    sandbox_memory_mb: int = 1024  # RLIMIT_AS of the sandboxed process
    sandbox_disk_mb: int = 64  # size of the sandbox's working directory (tmpfs) / largest file
    sandbox_max_processes: int = 16  # task limit of the sandbox's own uid or user namespace
    sandbox_max_open_files: int = 64  # RLIMIT_NOFILE
    sandbox_capture_bytes: int = 1_000_000  # stdout+stderr past this stops the program
    python_preload: tuple[str, ...] = ()  # modules a warm worker imports before code arrives
    sympy_preload: tuple[str, ...] = (
        "sympy", "sympy.integrals.manualintegrate", "sympy.integrals.heurisch", "sympy.integrals.risch",
    )
    sandbox_prefork: bool = True  # keep one warm, unused sandbox worker per tool ready
    # A fresh uid per worker when root, from a range no system or container tooling uses
    # (systemd's dynamic users sit at 61184-65519, nspawn ranges end below 1879048192).
    sandbox_uid_range: tuple[int, int] = (2_000_000_000, 2_100_000_000)
    search_corpus: str | None = None  # JSONL file, index directory, or "demo"; None: env var
    search_top_k: int = 3
    # "strict": python and sympy run only with every isolation layer (root: namespaces and a
    # fresh uid; not root: an unprivileged user namespace), else refuse with "sandbox
    # unavailable: ...". "unsafe": run with whatever this host allows. None: the
    # SPARK_SANDBOX_MODE environment variable, else "strict".
    sandbox_mode: str | None = None
    # Calculator, units, finance, chemistry, constants and search run in warm worker processes
    # that a timeout can kill; at most this many at once (more calls wait for a free one).
    host_tool_workers: int = 4
    host_tool_memory_mb: int = 4096  # RLIMIT_AS of each of those workers
    # Older names of the sandbox fields, still accepted (with a DeprecationWarning); not stored.
    python_memory_mb: dataclasses.InitVar[int | None] = None
    python_disk_mb: dataclasses.InitVar[int | None] = None
    python_max_processes: dataclasses.InitVar[int | None] = None
    python_max_open_files: dataclasses.InitVar[int | None] = None
    python_capture_bytes: dataclasses.InitVar[int | None] = None
    prefork: dataclasses.InitVar[bool | None] = None

    def __post_init__(self, *old: object) -> None:
        self._take_renamed(old)
        for name in ("default_timeout_s", "python_timeout_s", "sympy_timeout_s"):
            v = getattr(self, name)
            if not (0 < v <= 3600):
                raise ValueError(f"ToolsConfig.{name} must be in (0, 3600] seconds, got {v!r}")
        for name, low in (
            ("max_output_chars", 100),
            ("max_argument_chars", 10),
            ("sandbox_memory_mb", 128),
            ("sandbox_disk_mb", 1),
            ("sandbox_max_processes", 1),
            ("sandbox_max_open_files", 16),
            ("sandbox_capture_bytes", 1000),
            ("search_top_k", 1),
            ("host_tool_workers", 1),
            ("host_tool_memory_mb", 512),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"ToolsConfig.{name} must be an integer >= {low}, got {v!r}")
        lo, hi = self.sandbox_uid_range
        if not (1 <= lo < hi <= 2**31 - 2):
            raise ValueError(
                f"ToolsConfig.sandbox_uid_range must be (low, high) with 1 <= low < high, "
                f"got {self.sandbox_uid_range!r}"
            )
        for name in ("python_preload", "sympy_preload"):
            for mod in getattr(self, name):
                if not all(part.isidentifier() for part in str(mod).split(".")):
                    raise ValueError(f"ToolsConfig.{name}: {mod!r} is not a module name")
        if self.sandbox_mode not in (None, "strict", "unsafe"):
            raise ValueError(
                f"ToolsConfig.sandbox_mode must be 'strict', 'unsafe' or None, got {self.sandbox_mode!r}"
            )

    def _take_renamed(self, old_values: tuple[object, ...]) -> None:
        """Moves values given under an old name (``RENAMED``, in InitVar order) to the new one."""
        defaults = ToolsConfig.__dataclass_fields__
        for (old, new), value in zip(RENAMED.items(), old_values, strict=True):
            if value is None:
                continue
            current = getattr(self, new)
            if current != defaults[new].default and current != value:
                raise ValueError(
                    f"ToolsConfig: {old}={value!r} and {new}={current!r} both given; "
                    f"{old} is the old name of {new}, give only {new}"
                )
            warnings.warn(f"ToolsConfig.{old} is now {new} (it limits the sandbox of python and "
                          f"sympy alike); the old name will go", DeprecationWarning, stacklevel=4)
            object.__setattr__(self, new, value)

    def resolved_sandbox_mode(self) -> str:
        """The configured mode, else $SPARK_SANDBOX_MODE, else "strict"."""
        mode = self.sandbox_mode or os.environ.get("SPARK_SANDBOX_MODE") or "strict"
        if mode not in ("strict", "unsafe"):
            raise ValueError(f"SPARK_SANDBOX_MODE must be 'strict' or 'unsafe', got {mode!r}")
        return mode

    def resolved_search_corpus(self) -> str | None:
        """The configured corpus, else the SPARK_SEARCH_CORPUS environment variable."""
        return self.search_corpus or os.environ.get("SPARK_SEARCH_CORPUS") or None
