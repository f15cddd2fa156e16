"""The ``spark-jax`` command line. Each sub-command lives with its package in a ``*_cli``
module exposing ``register(subparsers)``; heavy imports happen inside the handlers so that
``spark-jax --help`` and light commands start quickly."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Modules that register sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "spark_jax.model.model_cli",
    "spark_jax.tools.tools_cli",
    "spark_jax.rollout.rollout_cli",
    "spark_jax.eval.eval_cli",
    "spark_jax.rl.train_cli",
    "spark_jax.rl.curves",
    "spark_jax.plan.plan_cli",
    "spark_jax.demo",
    "spark_jax.experiment",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-jax",
        description="SPaRK in JAX: judged rarity-first trajectories, offline step-wise PPO, MMLU-Pro eval.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from spark_jax.jax_setup import configure_gpu

    configure_gpu()  # before jax's backends start: recommended XLA flags when running on CUDA
    if os.environ.get("SPARK_JAX_NO_COMPILE_CACHE") != "1":
        from spark_jax.jax_setup import enable_compilation_cache

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
