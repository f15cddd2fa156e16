"""The one JSONL reader: parsed lines with their ``file:line``, a bad line an error naming it."""

from __future__ import annotations

import json
import os
from typing import Any, Iterator


class JsonlError(ValueError):
    """A line that is not valid JSON; the message starts with ``file:line``."""


def iter_jsonl(path: str | os.PathLike, *, error: type[Exception] = JsonlError,
               keep_bad: bool = False) -> Iterator[tuple[str, Any]]:
    """(``"file:line"``, parsed value) for each non-blank line of ``path``, in file order.

    A line that is not JSON raises ``error("file:line: not valid JSON: ...")``. With
    ``keep_bad`` that error is yielded in place of the value instead, for callers that collect
    problems (``--skip-invalid``) rather than stop at the first.
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{os.fspath(path)}:{lineno}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                bad = error(f"{where}: not valid JSON: {e}")
                if not keep_bad:
                    raise bad from None
                yield where, bad
                continue
            yield where, value
