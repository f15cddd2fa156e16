"""Keeping a file current while a long block runs: a daemon thread calls a writer every period, so
that a process killed outright (SIGKILL runs no ``finally``) leaves what it had done at most one
period ago. Used for the invocation heartbeats and the experiment's per-stage times."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def every(period_s: float, write: Callable[[], None], name: str) -> Iterator[None]:
    """Calls ``write()`` every ``period_s`` seconds in a daemon thread named ``name`` while the
    block runs; on leaving, the thread is stopped and joined, so no call overlaps what follows.
    An ``OSError`` from ``write`` is dropped (a full or vanished disk must not stop the run; the
    caller's final write reports it)."""
    if period_s <= 0:
        raise ValueError(f"period_s must be > 0 seconds, got {period_s}")
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(period_s):
            try:
                write()
            except OSError:
                pass

    thread = threading.Thread(target=loop, daemon=True, name=name)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
