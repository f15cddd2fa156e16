"""The ``spark-jax`` command line: one module per sub-command in this package (and the two
applications in ``spark_jax.apps``), each exposing ``register(subparsers)``. Those modules import
only argparse-level code at the top; jax, transformers and the model load inside the handlers so
that ``spark-jax --help`` and light commands start quickly."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from spark_jax.apps import demo, experiment
from spark_jax.cli import curves, generate, model, plan, tools, train
from spark_jax.cli import eval as eval_command

# In the order they appear in --help.
COMMAND_MODULES = (model, tools, generate, eval_command, train, curves, plan, demo, experiment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-jax",
        description="SPaRK in JAX: judged rarity-first trajectories, offline step-wise PPO, MMLU-Pro eval.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the command as typed, for the runs that record their invocations (core.provenance)
    args.command_line = ["spark-jax", *(sys.argv[1:] if argv is None else argv)]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from spark_jax.core.jax_setup import configure_gpu

    configure_gpu()  # before jax's backends start: recommended XLA flags when running on CUDA
    # spark-jax uses transformers for tokenizers only, so its "PyTorch was not found" advice is noise.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if os.environ.get("SPARK_JAX_NO_COMPILE_CACHE") != "1":
        from spark_jax.core.jax_setup import enable_compilation_cache

        enable_compilation_cache()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as e:
        print(f"spark-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
