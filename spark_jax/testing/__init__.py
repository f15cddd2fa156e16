"""Helpers for tests and benchmarks: a loopback OpenAI-compatible server and a tiny chat model.

Nothing here is used by the pipeline itself; it lives in the package so that tests in several
folders and the scripts in benchmarks/ share one implementation.
"""
