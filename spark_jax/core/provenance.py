"""Where a long run's outputs came from. Each invocation of ``spark-jax experiment`` or ``demo``
appends two JSON lines to ``OUT/invocations.jsonl``: one when it starts, one when it ends (its
exit status and wall seconds). Both carry the command line, the code's version and, when the
package runs from a git checkout, its commit and whether tracked files differed from it. A run
resumed over several sessions thus states every commit and every wall time it ran under.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
from typing import Any, Iterator, Sequence

INVOCATIONS = "invocations.jsonl"


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _git(root: pathlib.Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """``{"version", "commit", "dirty"}``: commit and dirty are None outside a git checkout (an
    installed wheel); dirty is True when tracked files differ from the commit."""
    root = pathlib.Path(__file__).resolve().parents[2]  # spark_jax/core/provenance.py -> the source tree
    commit = dirty = None
    if (root / ".git").exists():  # a directory, or a file in a git worktree
        head = _git(root, "rev-parse", "HEAD")
        if head:
            commit = head.strip()
            status = _git(root, "status", "--porcelain", "--untracked-files=no")
            dirty = None if status is None else bool(status.strip())
    try:
        version = importlib.metadata.version("spark-jax")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree on PYTHONPATH
        version = None
    return {"version": version, "commit": commit, "dirty": dirty}


def _append(out: pathlib.Path, record: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / INVOCATIONS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def record_invocation(out: pathlib.Path, command_line: Sequence[str] | None = None) -> Iterator[None]:
    """Appends the start line, runs the body, then the end line with ``status`` ("ok",
    "interrupted" or the exception's type) and ``wall_s`` (seconds). ``command_line``: the
    command as typed (default ``sys.argv``, its program shown by its name only)."""
    argv = list(command_line) if command_line is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    base = {"command": shlex.join(argv),
            **code_version(), "host": socket.gethostname(), "pid": os.getpid(), "start": _utc_now()}
    _append(out, {"event": "start", **base})
    t0 = time.perf_counter()
    status = "ok"
    try:
        yield
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException as e:
        status = type(e).__name__
        raise
    finally:
        _append(out, {"event": "end", **base, "end": _utc_now(), "status": status,
                      "wall_s": round(time.perf_counter() - t0, 1)})


def read_invocations(out: pathlib.Path) -> list[dict[str, Any]]:
    """The records of ``OUT/invocations.jsonl`` (empty when there is none)."""
    path = pathlib.Path(out) / INVOCATIONS
    if not path.is_file():
        return []
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not a JSON line: {e}") from e
    return records


def invocations_summary(out: pathlib.Path) -> str:
    """One Markdown paragraph: how many invocations, under which commits, and their wall time
    (an invocation that was killed has a start line only and is counted as such)."""
    records = read_invocations(out)
    starts = [r for r in records if r.get("event") == "start"]
    ends = [r for r in records if r.get("event") == "end"]
    if not starts:
        return ""
    commits = []
    for r in starts:
        c = (r.get("commit") or "")[:7] or f"version {r.get('version')}"
        c += " (with uncommitted changes)" if r.get("dirty") else ""
        if c not in commits:
            commits.append(c)
    ended = {(r.get("pid"), r.get("start")) for r in ends}
    killed = sum((r.get("pid"), r.get("start")) not in ended for r in starts)
    wall = sum(float(r.get("wall_s") or 0.0) for r in ends)
    text = (f"Ran as {len(starts)} invocation(s) from {starts[0]['start']}, code {', '.join(commits)}; "
            f"{wall / 3600:.2f} h of wall time in the {len(ends)} that ended")
    if killed:
        text += f"; {killed} ended without a record (killed), their time not counted"
    return text + f" (`{INVOCATIONS}`)."
