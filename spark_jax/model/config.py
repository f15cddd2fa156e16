"""Llama-family architecture config, named presets and conversion from HF ``config.json``."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling. ``default``: none. ``llama3``: Llama 3.1's long-context scaling."""

    rope_type: Literal["default", "llama3"] = "default"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in ("default", "llama3"):
            raise ValueError(
                f"unsupported rope type {self.rope_type!r}: spark-jax implements 'default' and 'llama3'"
            )
        if self.rope_type == "llama3":
            if self.factor <= 0:
                raise ValueError(f"rope_scaling.factor must be > 0, got {self.factor}")
            if self.high_freq_factor <= self.low_freq_factor:
                raise ValueError(
                    "rope_scaling.high_freq_factor must exceed low_freq_factor, got "
                    f"{self.high_freq_factor} <= {self.low_freq_factor}"
                )
            if self.original_max_position_embeddings <= 0:
                raise ValueError("rope_scaling.original_max_position_embeddings must be > 0")


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shapes and numerics of a Llama 3 / 3.1 / 3.2 or SmolLM2 decoder.

    ``param_dtype`` is how weights are stored, ``dtype`` the compute dtype of activations.
    Attention softmax, RMSNorm statistics and output logits are always float32.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling = dataclasses.field(default_factory=RopeScaling)
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    param_dtype: str = "float32"
    dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads}); "
                    "set head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        for name in ("param_dtype", "dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))

    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * hd * (self.num_heads * 2 + self.num_kv_heads * 2)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * layer + d + head

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], *, source: str = "config.json", **overrides: Any) -> "LlamaConfig":
        """Builds a config from a Hugging Face ``LlamaConfig`` dict; errors name ``source`` and the key."""
        model_type = hf.get("model_type", "llama")
        if model_type != "llama":
            raise ValueError(f"{source}: model_type {model_type!r} is not supported (only 'llama')")
        required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads")
        missing = [k for k in required if k not in hf]
        if missing:
            raise ValueError(f"{source}: missing key(s) {missing}")
        # transformers >= 5 nests rope settings under rope_parameters; older files use
        # rope_theta + rope_scaling at the top level.
        rope = dict(hf.get("rope_parameters") or {})
        scaling_src = hf.get("rope_scaling") or {}
        rope = {**scaling_src, **rope}
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise ValueError(
                f"{source}: rope_scaling.rope_type {rope_type!r} is not supported "
                "(spark-jax implements 'default' and 'llama3')"
            )
        if rope_type == "llama3":
            try:
                scaling = RopeScaling(
                    rope_type="llama3",
                    factor=float(rope["factor"]),
                    low_freq_factor=float(rope["low_freq_factor"]),
                    high_freq_factor=float(rope["high_freq_factor"]),
                    original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
                )
            except KeyError as e:
                raise ValueError(f"{source}: llama3 rope_scaling lacks key {e.args[0]!r}") from None
        else:
            scaling = RopeScaling()
        eos = hf.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ValueError(f"{source}: attention_bias/mlp_bias are not supported")
        kwargs = dict(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf["intermediate_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=int(hf["num_attention_heads"]),
            num_kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
            head_dim=hf.get("head_dim"),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=scaling,
            max_position_embeddings=int(hf.get("max_position_embeddings", 8192)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=hf.get("pad_token_id"),
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The HF ``config.json`` dict for this architecture (transformers ``LlamaConfig``)."""
        rope_scaling = None
        if self.rope_scaling.rope_type == "llama3":
            rope_scaling = {
                "rope_type": "llama3",
                "factor": self.rope_scaling.factor,
                "low_freq_factor": self.rope_scaling.low_freq_factor,
                "high_freq_factor": self.rope_scaling.high_freq_factor,
                "original_max_position_embeddings": self.rope_scaling.original_max_position_embeddings,
            }
        eos: Any = list(self.eos_token_ids) if len(self.eos_token_ids) != 1 else self.eos_token_ids[0]
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos if self.eos_token_ids else None,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.param_dtype,
        }


# ---- named presets -------------------------------------------------------------------------

def _preset(*, overrides: dict[str, Any], **defaults: Any) -> LlamaConfig:
    return LlamaConfig(**{**defaults, **overrides})


def llama3_1_8b(**overrides: Any) -> LlamaConfig:
    """Llama-3.1-8B(-Instruct): 32 layers, GQA 32/8, llama3 rope scaling x8."""
    return _preset(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32,
        num_heads=32, num_kv_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192),
        max_position_embeddings=131072, tie_word_embeddings=False,
        bos_token_id=128000, eos_token_ids=(128001, 128008, 128009), overrides=overrides,
    )


def llama3_2_1b(**overrides: Any) -> LlamaConfig:
    """Llama-3.2-1B(-Instruct): 16 layers, tied embeddings, llama3 rope scaling x32."""
    return _preset(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
        num_heads=32, num_kv_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192),
        max_position_embeddings=131072, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_ids=(128001, 128008, 128009), overrides=overrides,
    )


def smollm2_135m(**overrides: Any) -> LlamaConfig:
    """SmolLM2-135M(-Instruct): 30 layers, GQA 9/3, tied embeddings, default rope."""
    return _preset(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
        num_heads=9, num_kv_heads=3, rms_norm_eps=1e-5, rope_theta=100000.0,
        max_position_embeddings=8192, tie_word_embeddings=True,
        bos_token_id=1, eos_token_ids=(2,), pad_token_id=2, overrides=overrides,
    )


def tiny(**overrides: Any) -> LlamaConfig:
    """A 2-layer test model with GQA, untied embeddings and llama3 scaling that bites at ~64 tokens."""
    return _preset(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
        rope_scaling=RopeScaling("llama3", 4.0, 1.0, 4.0, 64),
        max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=1, eos_token_ids=(2,), pad_token_id=0, overrides=overrides,
    )


PRESETS = {
    "llama3_1_8b": llama3_1_8b,
    "llama3_2_1b": llama3_2_1b,
    "smollm2_135m": smollm2_135m,
    "tiny": tiny,
}


def preset(name: str, **overrides: Any) -> LlamaConfig:
    try:
        return PRESETS[name](**overrides)
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
