"""Where a long run's outputs came from. Each invocation of ``spark-jax experiment`` or ``demo``
appends two JSON lines to ``OUT/invocations.jsonl``: one when it starts, one when it ends (its
exit status and wall seconds). Both carry the command line, the code's version and, when the
package runs from a git checkout, its commit and whether tracked files differed from it. A run
resumed over several sessions thus states every commit and every wall time it ran under.

A process killed outright (SIGKILL: the out-of-memory killer, a machine or session that ends)
writes no end line. So while the body runs, a daemon thread rewrites a heartbeat file in
``OUT/invocations.alive/`` every ``heartbeat_s`` seconds with the wall seconds so far; a clean end
removes it. The summary counts a killed invocation's time from its last heartbeat, as a lower
bound, instead of leaving it out.
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

from spark_jax.core.periodic import every

INVOCATIONS = "invocations.jsonl"
HEARTBEATS = "invocations.alive"  # one JSON file per running (or killed) invocation


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


def _heartbeat_path(out: pathlib.Path, base: dict[str, Any]) -> pathlib.Path:
    return out / HEARTBEATS / f"{base['pid']}-{base['start'].replace(':', '')}.json"


def _write_heartbeat(path: pathlib.Path, base: dict[str, Any], t0: float) -> None:
    record = {**base, "last_seen": _utc_now(), "wall_s": round(time.perf_counter() - t0, 1)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous heartbeat whole


@contextlib.contextmanager
def record_invocation(out: pathlib.Path, command_line: Sequence[str] | None = None,
                      heartbeat_s: float = 60.0) -> Iterator[None]:
    """Appends the start line, runs the body, then the end line with ``status`` ("ok",
    "interrupted" or the exception's type) and ``wall_s`` (seconds). ``command_line``: the
    command as typed (default ``sys.argv``, its program shown by its name only). While the body
    runs, the heartbeat file is rewritten every ``heartbeat_s`` seconds (module docstring)."""
    if heartbeat_s <= 0:
        raise ValueError(f"heartbeat_s must be > 0 seconds, got {heartbeat_s}")
    argv = list(command_line) if command_line is not None else [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    base = {"command": shlex.join(argv),
            **code_version(), "host": socket.gethostname(), "pid": os.getpid(), "start": _utc_now()}
    _append(out, {"event": "start", **base})
    t0 = time.perf_counter()
    beat_path = _heartbeat_path(out, base)
    beat_path.parent.mkdir(exist_ok=True)
    _write_heartbeat(beat_path, base, t0)
    status = "ok"
    try:
        with every(heartbeat_s, lambda: _write_heartbeat(beat_path, base, t0), name="invocation-heartbeat"):
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
        beat_path.unlink(missing_ok=True)


def read_heartbeats(out: pathlib.Path) -> dict[tuple[Any, Any], dict[str, Any]]:
    """(pid, start) -> the last heartbeat of each invocation that has one left in
    ``OUT/invocations.alive/`` (running now, or killed). An unreadable file is skipped: it can
    only be a heartbeat cut short, and the summary then counts that invocation as unknown."""
    beats = {}
    for path in sorted((pathlib.Path(out) / HEARTBEATS).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        beats[(record.get("pid"), record.get("start"))] = record
    return beats


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
    """One Markdown paragraph: how many invocations, under which commits, and their wall time.
    An invocation without an end line was killed (or is still running, as the one writing this
    summary is not: it calls this after its body); its last heartbeat bounds its time from below."""
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
    killed = [(r.get("pid"), r.get("start")) for r in starts if (r.get("pid"), r.get("start")) not in ended]
    wall = sum(float(r.get("wall_s") or 0.0) for r in ends)
    text = (f"Ran as {len(starts)} invocation(s) from {starts[0]['start']}, code {', '.join(commits)}; "
            f"{wall / 3600:.2f} h of wall time in the {len(ends)} that ended")
    if killed:
        beats = read_heartbeats(out)
        seen = [beats[k] for k in killed if k in beats]
        text += f"; {len(killed)} ended without a record (killed)"
        if seen:
            lower = sum(float(b.get("wall_s") or 0.0) for b in seen)
            text += (f", {len(seen)} of them with a heartbeat ({HEARTBEATS}/) giving at least "
                     f"{lower / 3600:.2f} h more")
        if len(seen) < len(killed):
            text += f", {len(killed) - len(seen)} without one, their time not counted"
    return text + f" (`{INVOCATIONS}`)."
