"""The tool worker process: runs host-side tools on requests from the host, one at a time.

Started by tool_worker.py. Before it serves anything it dies with the host (PR_SET_PDEATHSIG),
caps its address space, sets no_new_privs and loads the sandbox's seccomp allow list without
the signal calls (the tools need no processes, sockets or signals; parsing is all they do with
model input), then imports what the tools load lazily, so the first call is warm too.

Protocol: one JSON request per line on stdin, ``{"tool": "module:Class", "config": {...},
"argument": str, "timeout_s": float}``; on its own copy of stdout "READY" once, then one JSON
line ``{"ok", "output", "error"}`` per request. Whatever the tools print goes to stderr.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import resource
import sys

from spark_jax.tools import base
from spark_jax.tools.config import ToolsConfig
from spark_jax.tools.isolation.child.confine import Unavailable, die_with_parent, load_seccomp, no_new_privs

READY = "READY"


def confine(settings: dict) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    die_with_parent(libc, settings["host_pid"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    limit = settings["memory_mb"] * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    program = bytes.fromhex(settings.get("seccomp") or "")
    if program and no_new_privs(libc):
        try:
            load_seccomp(libc, program)
        except Unavailable as e:  # the tools are ours: run them without it, but say so
            sys.stderr.write(f"tool worker: no seccomp filter: {e}\n")


class Tools:
    """Tool objects by (class, configuration), built on first use."""

    def __init__(self) -> None:
        self._tools: dict[tuple[str, str], base.Tool] = {}

    def get(self, spec: str, config: dict) -> base.Tool:
        key = (spec, json.dumps(config, sort_keys=True))
        tool = self._tools.get(key)
        if tool is None:
            module, _, name = spec.partition(":")
            cls = getattr(importlib.import_module(module), name)
            if not (isinstance(cls, type) and issubclass(cls, base.Tool)):
                raise TypeError(f"{spec} is not a Tool")
            tool = self._tools[key] = cls(ToolsConfig(**config))
        return tool


def warm(settings: dict, tools: Tools) -> None:
    for spec in settings.get("warm", ()):
        try:
            tools.get(spec, settings["config"]).warm()
        except Exception as e:  # noqa: BLE001 - the call itself will report it
            sys.stderr.write(f"tool worker: warming {spec} failed: {type(e).__name__}: {e}\n")


def serve(requests, replies, tools: Tools) -> None:
    for line in requests:
        try:
            req = json.loads(line)
            tool = tools.get(req["tool"], req["config"])
            result = tool.run_here(req["argument"], req["timeout_s"])
            reply = {"ok": result.ok, "output": result.output, "error": result.error}
        except Exception as e:  # noqa: BLE001 - a broken request, not a tool failure
            reply = {"ok": False, "output": "", "error": f"tool worker: {type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> None:
    settings = json.loads(sys.argv[2])
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # a tool's own print() must not corrupt the protocol
    confine(settings)
    tools = Tools()
    warm(settings, tools)
    replies.write(READY + "\n")
    replies.flush()
    serve(sys.stdin, replies, tools)
