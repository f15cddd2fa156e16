"""On-disk cache of judge replies, so a rerun pays nothing twice.

One JSON file per entry at ``<dir>/<key[:2]>/<key>.json``, where the key is the sha256 of the
judge model name, the exact request messages and the reply schema. Writes go to a temporary
file in the same folder that is fsynced and renamed over the target, so a crash leaves either
the old entry, the new one, or a stray temp file -- never a half-written entry. An entry that
does not parse (or whose stored key differs) is ignored with a warning and rewritten by the
next successful call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def cache_key(model: str, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any]) -> str:
    """sha256 hex of (model, messages, schema) in a canonical JSON form."""
    payload = json.dumps(
        {"format": CACHE_FORMAT, "model": model, "messages": [dict(m) for m in messages], "schema": schema},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """``get(key) -> dict | None`` and ``put(key, value)`` over a directory."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.corrupt_seen = 0

    def path(self, key: str) -> pathlib.Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"cache key must be 64 lowercase hex characters, got {key!r}")
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            raw = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("value"), dict):
                raise ValueError("entry is not {key, value} for this key")
        except ValueError as e:  # JSONDecodeError is a ValueError
            self.corrupt_seen += 1
            log.warning("ignoring corrupt judge cache entry %s (%s); it will be rewritten", p, e)
            return None
        return entry["value"]

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"key": key, "value": dict(value)}, ensure_ascii=False, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
