"""Shape buckets: round sizes up so jit compiles once per bucket, not once per request."""

from __future__ import annotations


def bucket(n: int, *, minimum: int = 1, buckets: tuple[int, ...] | None = None) -> int:
    """The smallest bucket >= n: from ``buckets`` if given, else a power of two >= ``minimum``."""
    if n < 0:
        raise ValueError(f"size must be >= 0, got {n}")
    if buckets:
        for b in sorted(buckets):
            if b >= n:
                return b
        raise ValueError(f"size {n} exceeds the largest bucket {max(buckets)}")
    size = max(1, minimum)
    while size < n:
        size *= 2
    return size
