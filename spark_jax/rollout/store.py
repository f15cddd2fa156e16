"""The append-only trajectory store of a Stage 1 run directory.

Layout (see :mod:`spark_jax.protocol.records`)::

    RUN_DIR/manifest.json            settings + hash, question lists, shards, usage counts
    RUN_DIR/shards/shard-00000.jsonl one block of whole questions, K step records each

Every file is written to a hidden temporary name in the same folder, fsynced, renamed over
its final name and the folder fsynced, so a reader (or a run killed with SIGKILL) sees a
file either complete or not at all. Shards are the ground truth: a shard that was renamed
but not yet listed in the manifest (a kill between the two writes) is adopted on resume,
and the usage counts are recomputed from the shards, so a resumed run continues with
exactly the counts an uninterrupted run would have.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import re
import time
from typing import Any, Iterable, Mapping

from spark_jax.protocol.actions import ANSWER
from spark_jax.protocol.records import iter_shard_records
from spark_jax.rollout.config import differing_keys
from spark_jax.rollout.selection import UsageCounts

FORMAT = "spark-jax-stage1/1"
MANIFEST = "manifest.json"
_SHARD = re.compile(r"\Ashard-(\d{5,})\.jsonl\Z")


class ConfigMismatchError(ValueError):
    """Resuming a run directory with settings other than the ones it was generated with."""


class RunLockedError(ValueError):
    """Another process is generating into the same run directory."""


class StoreCorruptError(ValueError):
    """A run directory whose shards break the exactly-once invariant."""


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    """Writes ``text`` to ``path`` so that ``path`` is always either the old or the new file."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class RunStore:
    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = pathlib.Path(run_dir)
        self.shard_dir = self.run_dir / "shards"
        self.manifest_path = self.run_dir / MANIFEST
        self.manifest: dict[str, Any] = {}

    # -- opening -------------------------------------------------------------------------
    def open(self, settings: Mapping[str, Any], settings_hash: str, init: Mapping[str, Any]) -> bool:
        """Creates the run (writing ``init`` into the manifest) or checks that an existing one
        was made with the same settings. Returns True when resuming."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            return self._open_locked(settings, settings_hash, init)
        except BaseException:
            self.close()
            raise

    def _open_locked(self, settings: Mapping[str, Any], settings_hash: str, init: Mapping[str, Any]) -> bool:
        for stale in self.shard_dir.glob(".*.tmp-*"):  # leftovers of a killed write
            stale.unlink()
        if self.manifest_path.is_file():
            try:
                manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise StoreCorruptError(f"{self.manifest_path}: not valid JSON ({e})") from None
            if manifest.get("format") != FORMAT:
                raise StoreCorruptError(f"{self.manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
            if manifest.get("settings_hash") != settings_hash:
                diff = differing_keys(manifest.get("settings", {}), dict(settings))
                raise ConfigMismatchError(
                    f"refusing to resume {self.run_dir}: it was generated with different settings "
                    f"(hash {manifest.get('settings_hash')} vs {settings_hash}):\n  " + "\n  ".join(diff)
                    + "\nRerun with the original settings, or pass a new --out directory."
                )
            self.manifest = manifest
            return True
        if any(self.shard_dir.glob("shard-*.jsonl")):
            raise StoreCorruptError(f"{self.run_dir}: shards exist but {MANIFEST} is missing; refusing to guess the settings")
        self.manifest = {
            "format": FORMAT,
            "settings_hash": settings_hash,
            "settings": dict(settings),
            **init,
            "shards": [],
            "usage_counts": {},
            "failed": {},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.write_manifest()
        return False

    def _lock(self) -> None:
        """Holds an exclusive lock on RUN_DIR/.lock for this store's lifetime: two writers on
        one run would both redo the pending questions and write them twice. The kernel drops
        the lock when the process dies, even by SIGKILL, so a killed run never blocks a rerun."""
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is being generated by another process (pid {holder}); "
                "wait for it or stop it before resuming"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)  # releases the lock
            self._lock_fd = None

    # -- shards --------------------------------------------------------------------------
    def shard_paths(self) -> list[pathlib.Path]:
        return sorted(p for p in self.shard_dir.glob("shard-*.jsonl") if _SHARD.match(p.name))

    def scan(self) -> tuple[dict[int, int], UsageCounts, list[dict[str, Any]]]:
        """(records per completed question_id, usage counts, shard entries) from the shards.

        Raises :class:`StoreCorruptError` if a question appears in two shards or a
        (question_id, step) twice."""
        per_question: dict[int, int] = {}
        owner: dict[int, str] = {}
        usage = UsageCounts()
        entries = []
        for path in self.shard_paths():
            qids: list[int] = []
            steps_seen: set[tuple[int, int]] = set()
            n = 0
            for rec in iter_shard_records(path):
                qid, step = rec["question_id"], rec["step"]
                if (qid, step) in steps_seen:
                    raise StoreCorruptError(f"{path}: question {qid} step {step} appears twice")
                steps_seen.add((qid, step))
                if qid in owner and owner[qid] != path.name:
                    raise StoreCorruptError(f"question {qid} appears in both {owner[qid]} and {path.name}")
                if qid not in owner:
                    owner[qid] = path.name
                    qids.append(qid)
                per_question[qid] = per_question.get(qid, 0) + 1
                if rec["selected"] != ANSWER:
                    usage.add(rec["selected"])
                n += 1
            entries.append({"file": path.name, "question_ids": qids, "records": n})
        return per_question, usage, entries

    def next_shard_path(self) -> pathlib.Path:
        nums = [int(_SHARD.match(p.name).group(1)) for p in self.shard_paths()]
        return self.shard_dir / f"shard-{(max(nums) + 1) if nums else 0:05d}.jsonl"

    def write_shard(self, records: Iterable[Mapping[str, Any]]) -> pathlib.Path:
        path = self.next_shard_path()
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    # -- manifest ------------------------------------------------------------------------
    def write_manifest(self) -> None:
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=1, ensure_ascii=False) + "\n")

    def record_progress(
        self, shards: list[dict[str, Any]], usage: UsageCounts, failed: Mapping[int, Mapping[str, Any]],
        stats: Mapping[str, Any],
    ) -> None:
        self.manifest["shards"] = shards
        self.manifest["usage_counts"] = usage.to_dict()
        self.manifest["failed"] = {str(k): dict(v) for k, v in sorted(failed.items())}
        self.manifest["stats"] = dict(stats)
        self.write_manifest()
