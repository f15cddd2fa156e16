"""The one cache root behind the compile cache, GGUF conversions and remote run copies."""

from __future__ import annotations

import pathlib

from spark_jax.core.cache import cache_root


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_JAX_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("SPARK_JAX_CACHE")
    assert cache_root() == pathlib.Path.home() / ".cache" / "spark_jax"
    monkeypatch.setenv("SPARK_JAX_CACHE", "")  # empty counts as unset, not as the working directory
    assert cache_root() == pathlib.Path.home() / ".cache" / "spark_jax"


def test_every_user_reads_the_same_root(monkeypatch, tmp_path):
    from spark_jax.core import jax_setup, storage
    from spark_jax.model import checkpoint_hf

    import jax

    monkeypatch.setenv("SPARK_JAX_CACHE", str(tmp_path))
    # jax is loaded here, so the call also sets jax's own config, which monkeypatch does not undo:
    # the environment names this process's cache, so the rest of the tests keep theirs (a relative
    # placeholder here once sent every later compile of this worker into the repository)
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", before)
    assert jax_setup.enable_compilation_cache() == tmp_path / "xla"
    assert jax.config.jax_compilation_cache_dir == before
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert checkpoint_hf.gguf_cache_dir(gguf).parent == tmp_path / "gguf"
    monkeypatch.setattr(storage, "copy_stage1_run", lambda src, dst: dst)
    assert storage.local_stage1_run("gs://bucket/run").parent == tmp_path / "remote_runs"
