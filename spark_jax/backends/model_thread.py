"""One worker thread per in-process model, so JAX calls never block the event loop.

The local judge and the local generator often share one model; routing both through the
same single thread keeps device work in order (no two big batches competing for memory or
the CPU's cores) while the event loop keeps serving API calls and tools.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import weakref
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_executors: "weakref.WeakKeyDictionary[Any, concurrent.futures.ThreadPoolExecutor]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def model_executor(model: Any) -> concurrent.futures.ThreadPoolExecutor:
    """The single-thread executor that runs ``model``'s device calls (created on first use)."""
    with _lock:
        ex = _executors.get(model)
        if ex is None:
            ex = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark-jax-model")
            _executors[model] = ex
            weakref.finalize(model, ex.shutdown, wait=False)
        return ex


async def run_on_model_thread(model: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Awaits ``fn(*args, **kwargs)`` run on ``model``'s worker thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(model_executor(model), functools.partial(fn, *args, **kwargs))
