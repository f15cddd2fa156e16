"""Memory-mapped safetensors reading and streaming writing, bfloat16 included.

Reading maps the file and hands out zero-copy numpy views, so a loader can move one tensor
(or one shard of one tensor) at a time to its devices. Writing streams tensors one by one
after a header computed from shapes alone, so an export never gathers the whole model.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
from typing import Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, or disagrees with the model config."""


class SafetensorsFile:
    """Read-only view of one ``.safetensors`` file."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"safetensors file not found: {self.path}")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: file too short to be safetensors ({size} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise CheckpointError(f"{self.path}: header length {header_len} exceeds file size {size}")
            try:
                header = json.loads(f.read(header_len))
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{self.path}: header is not valid JSON: {e}") from None
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries = header
        self._data_start = 8 + header_len
        data_len = size - self._data_start
        for name, entry in header.items():
            if entry["dtype"] not in _DTYPES:
                raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {entry['dtype']}")
            start, end = entry["data_offsets"]
            expected = int(np.prod(entry["shape"], dtype=np.int64)) * _DTYPES[entry["dtype"]].itemsize
            if end > data_len or end - start != expected:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} is truncated or corrupt "
                    f"(bytes {start}..{end} of {data_len}, expected {expected})"
                )
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if data_len else None

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        """A zero-copy, read-only view of tensor ``name``."""
        entry = self._entries[name]
        start, end = entry["data_offsets"]
        raw = self._map[self._data_start + start: self._data_start + end]
        return raw.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def write_safetensors(
    path: str | os.PathLike,
    specs: Iterable[tuple[str, tuple[int, ...], np.dtype]],
    fetch: Callable[[str], np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes tensors described by (name, shape, dtype) specs, fetching each only when written.

    Written to a temporary name and renamed, so a crash never leaves a half file in place.
    """
    specs = list(specs)
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, shape, dtype in specs:
        dtype = np.dtype(dtype)
        if dtype not in _NAMES:
            raise CheckpointError(f"cannot write tensor {name!r} of dtype {dtype}")
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in specs:
            arr = np.ascontiguousarray(fetch(name), dtype=np.dtype(dtype))
            if arr.shape != tuple(shape):
                raise CheckpointError(f"tensor {name!r} has shape {arr.shape}, header says {tuple(shape)}")
            f.write(arr.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
