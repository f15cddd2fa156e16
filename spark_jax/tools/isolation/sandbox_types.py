"""The sandbox's settings and the outcome of one run, with its error in words a model can use."""

from __future__ import annotations

import dataclasses
import signal

MODES = ("strict", "unsafe")
UNSAFE_HINT = "ToolsConfig(sandbox_mode='unsafe') or SPARK_SANDBOX_MODE=unsafe runs without it"


@dataclasses.dataclass(frozen=True)
class SandboxSettings:
    memory_mb: int = 1024
    disk_mb: int = 64
    max_processes: int = 16
    max_open_files: int = 64
    capture_bytes: int = 1_000_000
    preload: tuple[str, ...] = ()
    uid_range: tuple[int, int] = (2_000_000_000, 2_100_000_000)
    # "strict": every isolation layer or no run; "unsafe": what this host allows (opt-in by name).
    mode: str = "strict"
    # Layers to leave off ("namespaces", "mounts", "identity", "seccomp", "tasks", "keyring",
    # "proc_subset": masks instead), to test how the sandbox refuses (strict) or degrades (unsafe).
    disable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {MODES}, got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class SandboxOutcome:
    stdout: str
    stderr: str
    returncode: int | None  # None when the sandbox did not start
    timed_out: bool = False
    output_limited: bool = False
    setup_error: str | None = None
    layers: dict | None = None
    uid: int | None = None

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0
            and not self.timed_out
            and not self.output_limited
            and self.setup_error is None
        )

    def error_message(self, timeout_s: float) -> str | None:
        """What went wrong, in words a model can act on; None when ok."""
        if self.setup_error is not None:
            if self.setup_error.startswith("unavailable: "):
                return f"sandbox {self.setup_error}; {UNSAFE_HINT}"
            return f"sandbox failed to start: {self.setup_error}"
        if self.timed_out:
            return f"timed out after {timeout_s:g} s (the program was stopped)"
        if self.output_limited:
            return "the program printed too much output and was stopped"
        rc = self.returncode
        if rc == 0:
            return None
        if rc is not None and rc < 0:
            sig = -rc
            if sig == signal.SIGXCPU:
                return "CPU time limit exceeded (the program was stopped)"
            if sig == signal.SIGXFSZ:
                return "file size limit exceeded"
            if sig == signal.SIGSYS:
                return "the program made a forbidden system call and was stopped"
            if sig == signal.SIGKILL:
                return "the program was killed (CPU or memory limit)"
            return f"the program died from signal {signal.Signals(sig).name}"
        tail = self.stderr.strip().splitlines()
        last = tail[-1] if tail else ""
        return f"exit status {rc}" + (f": {last}" if last else "")
