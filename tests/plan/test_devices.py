"""jax device_kind strings map to the device table (memory, peak bf16 FLOP/s)."""

import pytest

from spark_jax.plan.devices import device_key, device_memory_gb, peak_flops


@pytest.mark.parametrize("kind, key, memory, peak", [
    ("NVIDIA H100 80GB HBM3", "h100", 80, 989e12),
    ("NVIDIA H200", "h200", 141, 989e12),
    ("TPU v4", "v4", 32, 275e12),
    ("TPU v5 lite", "v5e", 16, 197e12),
    ("TPU v5", "v5p", 95, 459e12),
    ("TPU v6 lite", "v6e", 32, 918e12),
])
def test_known_devices(kind, key, memory, peak):
    assert device_key(kind) == key
    assert device_memory_gb(key) == memory and peak_flops(key) == peak


def test_cpu_and_unknown_devices():
    assert device_key("cpu") == "cpu" and peak_flops("cpu") is None and device_memory_gb("cpu") > 1
    assert device_key("Some Future Chip") is None and peak_flops(None) is None
