"""Code that runs inside the sandbox's worker process: standard library only.

The sandbox loads these modules from their source under their own names, with empty stand-ins
for the packages above (isolation.sandbox's loader), so they import nothing else of spark_jax:
an import-linter contract (.importlinter) and tests/tools/isolation/child/test_child.py check that.
"""
