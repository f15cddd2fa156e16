"""Give freed heap memory back to the operating system.

XLA:CPU allocates and frees large buffers through the C heap. glibc keeps freed chunks in its
arenas instead of returning them, so a process that evaluates one model after another grows with
every system while no live array is left. ``malloc_trim(0)`` returns that memory; it is a no-op
where the C library has no such call (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc_malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # no C library to open, or one without malloc_trim
        return None


def release_freed_memory() -> bool:
    """Returns freed heap pages to the OS (glibc ``malloc_trim(0)``); True if it was available."""
    trim = _libc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
