"""The (data, fsdp, tensor) device mesh and partition rules per parameter kind.

Parameters are split over ``fsdp`` on their model-dimension side and over ``tensor`` on
their head/ffn/vocab side; activations are split over ``data`` and ``fsdp`` on the batch.
A mesh axis that does not divide a dimension is dropped for that array (replicated), so the
same rules serve SmolLM2's 9 heads and Llama's 32.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on the "/"-joined parameter path, spec for the array's dimensions)
PARAM_RULES: tuple[tuple[str, P], ...] = (
    (r"embed_tokens/embedding$", P("tensor", "fsdp")),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel$", P("fsdp", "tensor")),
    (r"(o_proj|down_proj)/kernel$", P("tensor", "fsdp")),
    (r"lm_head/kernel$", P("fsdp", "tensor")),
    # LoRA factors: A [in, rank] follows the kernel's input side, B [rank, out] its output side.
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj|lm_head)/kernel_lora_a$", P("fsdp", None)),
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj|lm_head)/kernel_lora_b$", P(None, "tensor")),
    (r"(o_proj|down_proj)/kernel_lora_a$", P("tensor", None)),
    (r"(o_proj|down_proj)/kernel_lora_b$", P(None, "fsdp")),
    # QLoRA: qwix stores a quantised kernel as kernel/array/{qvalue [in, out], scale [in / tile, out]};
    # both follow the kernel's layout (a scale dim the axis does not divide stays replicated).
    (r"(q_proj|k_proj|v_proj|gate_proj|up_proj)/kernel/array/(qvalue|scale)$", P("fsdp", "tensor")),
    (r"(o_proj|down_proj)/kernel/array/(qvalue|scale)$", P("tensor", "fsdp")),
)


def make_mesh(shape: Sequence[int] = (1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with axes (data, fsdp, tensor); ``shape`` must multiply to the device count."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"mesh shape must be three positive sizes (data, fsdp, tensor), got {shape}")
    devices = list(jax.devices() if devices is None else devices)
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"mesh shape {shape} needs {int(np.prod(shape))} devices, but {len(devices)} are available"
        )
    return Mesh(np.array(devices).reshape(shape), AXES)


def fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drops mesh axes that do not evenly divide their dimension (those dims are replicated)."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            fitted.append(None)
            continue
        names = axes if isinstance(axes, tuple) else (axes,)
        kept = []
        size = 1
        for name in names:
            if mesh.shape[name] > 1 and dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
        fitted.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*fitted)


def param_spec(path: str, shape: Sequence[int]) -> P:
    """The rule's partition spec for the parameter at ``path`` (replicated when no rule matches)."""
    for pattern, spec in PARAM_RULES:
        if re.search(pattern, path):
            return spec
    return P()


def param_sharding(path: str, shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, fit_spec(param_spec(path, shape), shape, mesh))


def path_str(path: Sequence) -> str:
    """"layers/0/self_attn/q_proj/kernel" from an nnx state path or a jax key path."""
    parts = []
    for p in path:
        if isinstance(p, jax.tree_util.GetAttrKey) and p.name == "value":
            continue  # nnx.Variable's payload, not part of the parameter's name
        for attr in ("key", "idx", "name"):
            if hasattr(p, attr):
                p = getattr(p, attr)
                break
        parts.append(str(p))
    return "/".join(parts)


def state_shardings(state, mesh: Mesh):
    """A NamedSharding for every array in an nnx State (or any pytree), by parameter path."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: param_sharding(path_str(path), x.shape, mesh), state
    )


def batch_sharding(mesh: Mesh, shape: Sequence[int]) -> NamedSharding:
    """Batch-major arrays [B, ...]: B split over (data, fsdp) as far as it divides."""
    return NamedSharding(mesh, fit_spec(P(BATCH_AXES), shape, mesh))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
