"""Tools for the tool-worker tests; the worker imports them by module path like real tools."""

import time

from spark_jax.tools.base import Tool


class RunawayTool(Tool):
    """Computes 7**N for the N it is given: C code that holds the GIL for as long as N wants
    (7**30000000: about a minute on a loaded CI core, so a regression fails, not hangs)."""

    name = "runaway"
    in_worker = True

    def _run(self, argument: str, timeout_s: float) -> str:
        return str(pow(7, int(argument)).bit_length())


class BusyLoopTool(Tool):
    """A pure-Python loop that catches every exception, so only a kill ends it (or, should a
    regression run it in the host, two minutes)."""

    name = "busy"
    in_worker = True

    def _run(self, argument: str, timeout_s: float) -> str:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                sum(range(1000))
            except BaseException:  # noqa: BLE001 - on purpose: nothing polite stops it
                pass
        return "still running after 120 s"


class NoisyTool(Tool):
    """Prints to stdout and returns escape sequences, as a careless or hostile library could."""

    name = "noisy"
    in_worker = True

    def _run(self, argument: str, timeout_s: float) -> str:
        print("not a protocol line", flush=True)
        return f"\x1b[31m{argument}\x1b[0m\x1b]52;c;cHduZWQ=\x07 done\r\x08"
