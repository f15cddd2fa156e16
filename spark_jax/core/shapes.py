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


def length_bucket(n: int, *, minimum: int = 16, steps: int = 2) -> int:
    """The smallest sequence-length bucket >= n: ``steps`` buckets per octave from ``minimum``.
    steps=2: powers of two and 1.5x powers of two (16, 24, 32, 48, 64, 96, ...), so padding
    wastes at most a third instead of a half; steps=4 adds 1.25x and 1.75x (at most a fifth)."""
    if n < 0:
        raise ValueError(f"size must be >= 0, got {n}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    size = max(1, minimum)
    while True:
        for k in range(steps):
            candidate = size + size * k // steps
            if candidate >= n and (k == 0 or size >= steps):
                return candidate
        size *= 2
