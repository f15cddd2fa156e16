"""Accelerator facts used by the planner and the benchmarks: memory and peak dense bf16 FLOP/s.

Memory in GB (1e9 bytes) per device as jax sees it (one TPU chip, one GPU). Peak FLOP/s are
the vendors' dense bf16 figures (no sparsity). ``device_kind`` strings are what
``jax.devices()[0].device_kind`` reports.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    name: str
    memory_gb: float
    peak_bf16_flops: float | None  # None: unknown (MFU is not reported)


DEVICES: dict[str, DeviceSpec] = {
    "v4": DeviceSpec("TPU v4", 32.0, 275e12),
    "v5e": DeviceSpec("TPU v5e", 16.0, 197e12),
    "v5p": DeviceSpec("TPU v5p", 95.0, 459e12),
    "v6e": DeviceSpec("TPU v6e", 32.0, 918e12),
    "h100": DeviceSpec("NVIDIA H100 80GB", 80.0, 989e12),
    "h200": DeviceSpec("NVIDIA H200", 141.0, 989e12),
}

# Substrings of jax's device_kind (lower-cased) -> table key; first match wins.
_KIND_PATTERNS = (
    ("v5 lite", "v5e"), ("v5e", "v5e"), ("v5p", "v5p"), ("v5", "v5p"), ("v6 lite", "v6e"), ("v6e", "v6e"),
    ("v4", "v4"), ("h200", "h200"), ("h100", "h100"),
)


def device_key(kind: str) -> str | None:
    """The table key for a jax ``device_kind`` such as "TPU v5 lite" or "NVIDIA H100 80GB HBM3"."""
    k = kind.lower()
    if k in DEVICES or k == "cpu":
        return k
    for pattern, key in _KIND_PATTERNS:
        if pattern in k:
            return key
    return "cpu" if k.startswith("cpu") else None


def host_memory_gb() -> float:
    """Physical RAM of this machine (the CPU backend's device memory)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9


def available_host_memory_gb() -> float:
    """RAM the kernel can give a new process now (``MemAvailable``), at most the physical RAM."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return min(host_memory_gb(), int(line.split()[1]) * 1024 / 1e9)
    except OSError:
        pass
    return host_memory_gb()


def device_memory_gb(key: str | None) -> float | None:
    if key == "cpu":
        return host_memory_gb()
    spec = DEVICES.get(key or "")
    return None if spec is None else spec.memory_gb


def peak_flops(key: str | None) -> float | None:
    spec = DEVICES.get(key or "")
    return None if spec is None else spec.peak_bf16_flops
