"""LoRA / QLoRA adapters through qwix, merging, and PEFT-format export.

qwix intercepts the matmuls of the model's ``__call__`` and adds, for every ``nnx.Linear``
whose module path matches ``target_modules``, ``x @ A @ B * alpha / rank`` with
``A = kernel_lora_a [in, r]`` (he-uniform) and ``B = kernel_lora_b [r, out]`` (zeros), both
``nnx.LoRAParam``. With ``qlora`` the matched base kernels are stored as NF4 (4-bit
NormalFloat, absmax scales per ``qlora_tile_size`` input rows) and dequantised on the fly.
Only LoRAParams are trained; base weights (``nnx.Param``) get no optimizer state. The
update of plain projections goes through ``lora_kernel.lora_delta`` (a backward without
transposed copies of the activations' gradients).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx

from spark_jax.model.checkpoint_hf import abstract_model, hf_name
from spark_jax.model.llama import Llama
from spark_jax.model.safetensors_io import write_safetensors
from spark_jax.model.sharding import path_str
from spark_jax.rl.lora_kernel import LoraProvider

DEFAULT_TARGETS = r".*(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """rank 0 = no adapters (then ``full_finetune`` must be set in the trainer config).

    alpha          scale numerator: the update is A @ B * alpha / rank (as peft)
    target_modules regex matched against module paths such as ``layers/3/self_attn/q_proj``
    qlora          store matched base kernels in NF4 (QLoRA); the reference pass uses them too
    qlora_tile_size rows of the input dimension sharing one NF4 scale
    """

    rank: int = 16
    alpha: float = 32.0
    target_modules: str = DEFAULT_TARGETS
    qlora: bool = False
    qlora_tile_size: int = 64

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        try:
            re.compile(self.target_modules)
        except re.error as e:
            raise ValueError(f"lora.target_modules is not a valid regex: {e}") from None
        if self.qlora and self.rank == 0:
            raise ValueError("lora.qlora needs lora.rank > 0")
        if self.qlora_tile_size < 1:
            raise ValueError(f"lora.qlora_tile_size must be >= 1, got {self.qlora_tile_size}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def apply_lora(model: Llama, cfg: LoraConfig, *, seed: int = 0) -> Llama:
    """A copy of ``model`` with adapters on the matching projections (QLoRA with ``cfg.qlora``)."""
    if cfg.rank <= 0:
        raise ValueError("apply_lora needs lora.rank > 0")
    kwargs: dict[str, Any] = dict(module_path=cfg.target_modules, rank=cfg.rank, alpha=cfg.alpha)
    if cfg.qlora:
        kwargs.update(weight_qtype="nf4", tile_size=cfg.qlora_tile_size)
    if re.search(cfg.target_modules, "lm_head") or re.search(cfg.target_modules, "embed_tokens"):
        raise ValueError(
            f"lora.target_modules {cfg.target_modules!r} matches lm_head/embed_tokens: adapters are "
            "supported on the decoder's projections only"
        )
    provider = LoraProvider(**kwargs)
    sample = jnp.zeros((1, 8), jnp.int32)
    if isinstance(model, Llama):
        # Intercept hidden_states, not __call__: __call__ and generate.py's prefill both go
        # through hidden_states, so a LoRA model decodes with its adapters on every step.
        method, inputs = "hidden_states", (sample, jnp.zeros((1, 8), jnp.int32))
    else:  # e.g. the critic, whose __call__ runs the backbone
        method, inputs = "__call__", (sample,)
    if cfg.qlora:
        # qwix converts the bases to NF4 and creates the adapters by running the model once;
        # under nnx.jit that is one compiled program instead of hundreds of eager ops.
        lora_model = nnx.jit(lambda m: qwix.apply_lora_to_model(
            m, provider, *inputs, methods=(method,), rngs=nnx.Rngs(seed)))(model)
    else:
        # Plain LoRA: qwix only installs its interception (no model run) and the adapters are
        # created here. qwix's own run traces and compiles the whole model, and each adapter
        # creation reads a tracer's .sharding, whose error message walks the whole trace so far.
        lora_model = qwix.apply_lora_to_model(model, provider, *inputs, methods=(method,),
                                              rngs=nnx.Rngs(seed), skip_nnx_init=True)
        _create_adapters(lora_model, cfg, seed)
    if not nnx.state(lora_model, nnx.LoRAParam):
        raise ValueError(
            f"lora.target_modules {cfg.target_modules!r} matched no projection; module paths look "
            "like 'layers/0/self_attn/q_proj'"
        )
    return lora_model


def _create_adapters(model: nnx.Module, cfg: LoraConfig, seed: int) -> None:
    """Adds qwix's adapters to every ``nnx.Linear`` whose path fully matches ``target_modules``:
    ``kernel_lora_a`` [in, r] (he-uniform, as qwix) and ``kernel_lora_b`` [r, out] (zeros), both
    ``nnx.LoRAParam`` in the kernel's dtype, sharded like the kernel's rows / columns."""
    key = jax.random.key(seed)
    for path, module in model.iter_modules():
        if not isinstance(module, nnx.Linear) or not re.fullmatch(cfg.target_modules, "/".join(map(str, path))):
            continue
        kernel = module.kernel[...]
        d_in, d_out = kernel.shape
        key, sub = jax.random.split(key)
        a = jax.nn.initializers.he_uniform()(sub, (d_in, cfg.rank), kernel.dtype)
        b = jnp.zeros((cfg.rank, d_out), kernel.dtype)
        sharding = getattr(kernel, "sharding", None)
        if isinstance(sharding, jax.sharding.NamedSharding):
            spec = tuple(sharding.spec) + (None,) * (2 - len(sharding.spec))
            a = jax.device_put(a, sharding.update(spec=jax.sharding.PartitionSpec(spec[0], None)))
            b = jax.device_put(b, sharding.update(spec=jax.sharding.PartitionSpec(None, spec[1])))
        module.kernel_lora_a = nnx.LoRAParam(a)
        module.kernel_lora_b = nnx.LoRAParam(b)


def trainable_filter(cfg: LoraConfig):
    """What the optimizer updates: the adapters, or every parameter for full fine-tuning."""
    return nnx.LoRAParam if cfg.rank > 0 else nnx.Param


def adapters_off(trainable_state):
    """The trainable state with every ``kernel_lora_b`` zeroed: the model computes the base."""
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros_like(x) if path_str(p).endswith("kernel_lora_b") else x, trainable_state
    )


def _plain(x: Any) -> Any:
    return x[...] if isinstance(x, nnx.Variable) else x


def _base_kernel(module: nnx.Module) -> jax.Array:
    kernel = module.kernel
    if isinstance(kernel, nnx.Variable):
        return kernel[...]
    array = getattr(kernel, "array", None)  # qwix WithAux around an NF4 QArray
    if isinstance(array, qwix.QArray):
        plain = jax.tree.map(_plain, array, is_leaf=lambda x: isinstance(x, nnx.Variable))
        return qwix.dequantize(plain)
    raise TypeError(f"unexpected kernel type {type(kernel).__name__}")


def lora_modules(model: nnx.Module) -> dict[str, nnx.Module]:
    """Module path ("layers/0/self_attn/q_proj") -> module, for modules carrying adapters."""
    return {
        "/".join(str(p) for p in path): m
        for path, m in nnx.iter_modules(model)
        if hasattr(m, "kernel_lora_a") and hasattr(m, "kernel_lora_b")
    }


def merged_model(model: Llama, cfg: LoraConfig) -> Llama:
    """A plain ``Llama`` with W + A @ B * alpha / rank (NF4 bases dequantised first)."""
    mcfg = model.config
    modules = {"/".join(str(p) for p in path): m for path, m in nnx.iter_modules(model)}
    adapters = lora_modules(model)
    graphdef, abs_state = nnx.split(abstract_model(mcfg))
    dtype = jnp.dtype(mcfg.param_dtype)

    def fill(path, sds):
        name = path_str(path)
        mod_path, leaf = name.rsplit("/", 1)
        mod = modules[mod_path]
        if leaf == "kernel":
            w = _base_kernel(mod).astype(jnp.float32)
            if mod_path in adapters:
                a = mod.kernel_lora_a[...].astype(jnp.float32)
                b = mod.kernel_lora_b[...].astype(jnp.float32)
                w = w + (a @ b) * cfg.scale
        else:
            w = _plain(getattr(mod, leaf))
        if tuple(w.shape) != tuple(sds.shape):
            raise ValueError(f"{name}: merged shape {w.shape} differs from the model's {sds.shape}")
        return jnp.asarray(w, dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, abs_state))


def peft_module_name(mod_path: str) -> str:
    """"layers/0/self_attn/q_proj" -> "model.layers.0.self_attn.q_proj" (transformers' name)."""
    return hf_name(mod_path + "/kernel")[0].removesuffix(".weight")


def export_peft(model: Llama, cfg: LoraConfig, out_dir: str | pathlib.Path, *,
                base_model_name_or_path: str | None = None) -> pathlib.Path:
    """adapter_config.json + adapter_model.safetensors that ``peft.PeftModel.from_pretrained`` loads.

    peft stores A as [r, in] and B as [out, r] (torch Linear layout); ours are [in, r] and
    [r, out], so both are transposed. ``target_modules`` lists the exact module names.
    QLoRA adapters were trained against the NF4-rounded base: on the full-precision base
    they give close, not identical, logits.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    names = []
    for mod_path, mod in sorted(lora_modules(model).items()):
        hf = peft_module_name(mod_path)
        names.append(hf)
        a = np.asarray(jax.device_get(mod.kernel_lora_a[...]), np.float32)
        b = np.asarray(jax.device_get(mod.kernel_lora_b[...]), np.float32)
        tensors[f"base_model.model.{hf}.lora_A.weight"] = np.ascontiguousarray(a.T)
        tensors[f"base_model.model.{hf}.lora_B.weight"] = np.ascontiguousarray(b.T)
    if not tensors:
        raise ValueError("the model has no LoRA adapters to export")
    specs = [(k, v.shape, np.dtype(np.float32)) for k, v in sorted(tensors.items())]
    write_safetensors(out / "adapter_model.safetensors", specs, lambda k: tensors[k])
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "target_modules": names,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "modules_to_save": None,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out
