"""maybe_initialize reads the environment (no processes are started here) and the GPU flag helper."""

from __future__ import annotations

import jax
import pytest

from spark_jax.core import distributed
from spark_jax.core.jax_setup import configure_gpu


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(distributed, "_initialized", False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.append(kw))
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SPARK_JAX_DISTRIBUTED"):
        monkeypatch.delenv(k, raising=False)
    return seen


def test_single_process_environment_initialises_nothing(calls):
    assert distributed.maybe_initialize() is False
    assert calls == [] and distributed.is_main_process()


def test_explicit_coordinator(calls, monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert distributed.maybe_initialize() is True
    assert distributed.maybe_initialize() is True  # once only
    assert calls == [{"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1}]
    assert jax.config.values["jax_cpu_collectives_implementation"] == "gloo"  # CPU processes can reduce


def test_tpu_slice_lets_jax_discover_the_coordinator(calls, monkeypatch):
    monkeypatch.setenv("SPARK_JAX_DISTRIBUTED", "1")
    assert distributed.maybe_initialize() is True
    assert calls == [{}]


@pytest.mark.parametrize("env, message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "must be integers"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "must lie in"),
])
def test_bad_environment_is_a_clear_error(calls, monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        distributed.maybe_initialize()
    assert calls == []


def test_gpu_flags_added_only_for_cuda_and_never_override_the_user():
    env = {"XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=false --foo=1"}
    assert configure_gpu(env, cuda_available=True) == []
    assert env["XLA_FLAGS"].count("latency_hiding") == 1 and "=false" in env["XLA_FLAGS"]
    env = {}
    assert configure_gpu(env, cuda_available=True) == ["--xla_gpu_enable_latency_hiding_scheduler=true"]
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"
    # no CUDA plugin; a plugin but CPU asked for; a plugin but the helper turned off
    for env, cuda in (({}, False), ({"JAX_PLATFORMS": "cpu"}, True), ({"SPARK_JAX_NO_GPU_FLAGS": "1"}, True)):
        assert configure_gpu(env, cuda_available=cuda) == [] and "XLA_FLAGS" not in env
