"""CLI: ``spark-jax tools`` (list), ``spark-jax tool NAME ARGUMENT`` (run one; exit 0 when ok,
1 when not) and ``spark-jax index-corpus CORPUS.jsonl --out DIR`` (build a search index)."""

from __future__ import annotations

import argparse
import json
import sys


def _list(args: argparse.Namespace) -> int:
    from spark_jax.tools import TOOL_NAMES, TOOLS

    for name in TOOL_NAMES:
        tool = TOOLS[name]
        print(f"{name}: {tool.description}")
        if args.formats:
            print(f"    input: {tool.argument_format}")
    if args.sandbox:
        from spark_jax.tools import current_config
        from spark_jax.tools.isolation.sandbox import sandbox_layers
        from spark_jax.tools.python_tool import sandbox_settings

        layers = sandbox_layers(sandbox_settings(current_config(), ()))
        mode = layers.get("mode", "?")
        print(f"python sandbox mode: {mode}" + (f" ({layers['error']})" if "error" in layers else ""))
        if mode != "unavailable":
            # Strict mode refuses without a task limit; unsafe mode may run without one.
            tasks = layers.get("tasks", "off: not reported")
            print(f"python sandbox task limit: {tasks}" + (
                f" (the {mode} mode has NO task limit: a thread bomb can exhaust the host's pids)"
                if tasks.startswith("off") else ""))
        print("python sandbox layers: " + json.dumps(layers))
    return 0


def _run(args: argparse.Namespace) -> int:
    from spark_jax.tools import ToolsConfig, configure, run_tool

    if args.corpus:
        configure(ToolsConfig(search_corpus=args.corpus))
    argument = sys.stdin.read() if args.argument == "-" else args.argument
    result = run_tool(args.name, argument, timeout_s=args.timeout)
    if args.json:
        print(json.dumps({"ok": result.ok, "output": result.output, "error": result.error,
                          "elapsed_s": round(result.elapsed_s, 4)}))
    else:
        if result.output:
            print(result.output)
        if not result.ok:
            print(f"error: {result.error}", file=sys.stderr)
    return 0 if result.ok else 1


def _index(args: argparse.Namespace) -> int:
    from spark_jax.tools.search import CorpusError, write_index

    try:
        n = write_index(args.corpus, args.out)
    except CorpusError as e:
        raise ValueError(str(e)) from None
    print(f"indexed {n} documents from {args.corpus} into {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tools", help="list the tools (and CoT) with their descriptions")
    p.add_argument("--formats", action="store_true", help="also print each tool's argument format")
    p.add_argument("--sandbox", action="store_true", help="also report the python sandbox's mode (root, user-namespace, unsafe or unavailable) and layers")
    p.set_defaults(func=_list)

    p = sub.add_parser("tool", help="run one tool: spark-jax tool NAME ARGUMENT ('-' reads stdin)")
    p.add_argument("name")
    p.add_argument("argument")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: the tool's own)")
    p.add_argument("--corpus", default=None, help="search corpus: JSONL, index dir or 'demo'")
    p.add_argument("--json", action="store_true", help="print the ToolResult as one JSON line")
    p.set_defaults(func=_run)

    p = sub.add_parser("index-corpus", help="build a BM25 index for the search tool")
    p.add_argument("corpus", help="JSONL file, one {'id', 'title', 'text'} object per line")
    p.add_argument("--out", required=True, help="index directory to write")
    p.set_defaults(func=_index)
