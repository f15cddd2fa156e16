"""Run directories that may live on shared storage (``gs://bucket/...``) through etils.epath.

Local paths stay local (made absolute); URLs such as ``gs://`` go through epath, whose GCS
backend (gcsfs or tensorflow's gfile) must be installed where such paths are used. orbax
writes checkpoints to either. The Stage 1 store (file locks, fsync + rename) needs a POSIX
file system, so Stage 1 writes locally; training reads a remote Stage 1 run by copying its
manifest and shards into a local cache first (they are small: text records).
"""

from __future__ import annotations

import hashlib
import os
import pathlib

from etils import epath

from spark_jax.core import cache


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def run_path(path: str | os.PathLike) -> epath.Path:
    """An epath for ``path``: absolute when local, the URL unchanged when remote."""
    if is_remote(path):
        return epath.Path(os.fspath(path))
    return epath.Path(pathlib.Path(path).absolute())


def copy_stage1_run(src: epath.Path, dst: pathlib.Path) -> pathlib.Path:
    """Copies ``manifest.json`` and ``shards/*.jsonl`` of a Stage 1 run from ``src`` to ``dst``."""
    shards = sorted(src.glob("shards/shard-*.jsonl"))
    if not shards:
        raise FileNotFoundError(f"{src}: no shards/shard-*.jsonl")
    (dst / "shards").mkdir(parents=True, exist_ok=True)
    if (src / "manifest.json").exists():
        (dst / "manifest.json").write_bytes((src / "manifest.json").read_bytes())
    for shard in shards:
        (dst / "shards" / shard.name).write_bytes(shard.read_bytes())
    return dst


def local_stage1_run(run_dir: str | os.PathLike, cache_root: str | os.PathLike | None = None) -> pathlib.Path:
    """A local directory holding the Stage 1 run ``run_dir`` (itself when already local)."""
    if not is_remote(run_dir):
        return pathlib.Path(run_dir)
    root = pathlib.Path(cache_root) if cache_root else cache.cache_root()
    key = hashlib.sha256(os.fspath(run_dir).encode()).hexdigest()[:16]
    return copy_stage1_run(epath.Path(os.fspath(run_dir)), root / "remote_runs" / key)
