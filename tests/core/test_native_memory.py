"""release_freed_memory: glibc's malloc_trim where there is one, a no-op elsewhere, and the
evaluation calls it after every system (the bug: a 24 GB experiment was OOM-killed after its
score-mode evaluation of 7 systems, with no live array left; malloc_trim gave back 0.9-1.4 GB per
system in the probe)."""

from __future__ import annotations

import platform

from spark_jax.core import native_memory


def test_trims_on_glibc_and_is_a_no_op_without_a_c_library(monkeypatch):
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert native_memory.release_freed_memory() is True
    native_memory._libc_malloc_trim.cache_clear()
    monkeypatch.setattr(native_memory.ctypes.util, "find_library", lambda name: None)
    try:
        assert native_memory.release_freed_memory() is False
    finally:
        native_memory._libc_malloc_trim.cache_clear()


def test_evaluate_systems_releases_memory_after_each_system(monkeypatch):
    from spark_jax.eval import evaluate

    calls = []

    class FakeAgent:
        def __init__(self, model, cfg, name):
            self.name = name

        def run(self, questions, progress=None):
            return [{"model": self.name, "question_id": q} for q in questions]

    monkeypatch.setattr(evaluate, "PolicyAgent", FakeAgent)
    monkeypatch.setattr(evaluate, "release_freed_memory", lambda: calls.append(1) or True)
    rows = evaluate.evaluate_systems([("a", lambda: object()), ("b", lambda: object())], [1, 2], None,
                                     progress=False)
    assert [r["model"] for r in rows] == ["a", "a", "b", "b"] and len(calls) == 2


def test_release_compiled_code_drops_the_executables_jax_keeps():
    """The bug: a multi-seed experiment kept every evaluation executable, so the memory plan refused
    seed 1's first arm in the same process; jitted functions keep theirs until released."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: x * 2)
    f(jnp.ones(3)), f(jnp.ones(4))
    assert f._cache_size() == 2
    native_memory.release_compiled_code()
    assert f._cache_size() == 0
    assert f(jnp.ones(3)).tolist() == [2.0, 2.0, 2.0]  # it compiles again on the next call
