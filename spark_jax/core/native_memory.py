"""Give memory that a finished phase no longer needs back to the operating system.

XLA:CPU allocates and frees large buffers through the C heap. glibc keeps freed chunks in its
arenas instead of returning them, so a process that evaluates one model after another grows with
every system while no live array is left. ``malloc_trim(0)`` returns that memory; it is a no-op
where the C library has no such call (musl, macOS).

Compiled executables are the other thing a long process keeps: jax holds every one until the
process ends, an evaluation compiles one per shape bucket it meets, and each holds memory that
grows with the model's size. ``release_compiled_code`` drops them between phases that share no
compiled function; the next call of a jitted function compiles again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


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


def release_compiled_code() -> None:
    """Drops every compiled executable (``jax.clear_caches``), then the freed heap pages."""
    import jax  # deferred: the trim above is useful without jax

    gc.collect()  # jitted functions of objects that are gone, before the caches are cleared
    jax.clear_caches()
    release_freed_memory()
