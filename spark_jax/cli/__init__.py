"""Entry points: the ``spark-jax`` command and its sub-commands (the top layer)."""

from spark_jax.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
