"""``TrainConfig``: everything a Stage 2 run needs, loaded with ``spark_jax.core.config_io``."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Literal

import yaml

from spark_jax.core.config_io import load_config
from spark_jax.core.storage import is_remote, run_path

from spark_jax.rl.adapters import LoraConfig
from spark_jax.rl.candidates import CandidateConfig
from spark_jax.rl.ppo import PPOConfig


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio``; global-norm clipping.

    Warmup starts at ``lr / (warmup_steps + 1)``, not 0, so the first update moves the adapters.

    The schedule counts optimizer updates: ``steps * ppo.ppo_epochs`` for PPO, ``steps`` for SFT.
    """

    lr: float = 1e-4
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float = 1.0

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.clip_norm <= 0:
            raise ValueError(f"optim.clip_norm must be > 0, got {self.clip_norm}")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Save every ``every`` steps (and at the end), keep the last ``keep``, asynchronously."""

    every: int = 50
    keep: int = 3
    async_save: bool = True

    def __post_init__(self):
        if self.every < 1 or self.keep < 1:
            raise ValueError("checkpoint.every and checkpoint.keep must be >= 1")


@dataclasses.dataclass(frozen=True)
class HardwareConfig:
    """What the run is planned for; read by ``spark-jax plan``, ignored by training.

    device            cpu, h100, h200, v4, v5e, v5p or v6e ("" = the kind jax sees where plan runs)
    device_memory_gb  memory per device in GB (1e9 bytes); 0 = the device table's figure
    """

    device: str = ""
    device_memory_gb: float = 0.0

    def __post_init__(self):
        if self.device_memory_gb < 0:
            raise ValueError(f"hardware.device_memory_gb must be >= 0, got {self.device_memory_gb}")
        object.__setattr__(self, "device", self.device.strip().lower())


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One Stage 2 run. ``data`` is a Stage 1 run directory, ``model`` an HF directory,
    a .gguf file or "embedded". ``batch_size`` counts rows, global (all processes), split into
    ``grad_accum`` micro-batches: with ``packing`` a row is one trajectory (all its steps in one
    causal sequence), without it one step record. ``loss_normalization``: "tokens" (every action
    token of the global batch weighs the same) or "records" (every step weighs the same).
    ``dtype`` is the compute dtype, ``param_dtype`` the storage.

    Warm start: ``init_from`` is another train run whose trainable weights (adapters) this run
    starts from, at its checkpoint ``init_step`` (0: its latest; the trainer records the step it
    used, so a resume checks it). ``reference`` is the KL reference: "base" (adapters off, or
    the base weights) or "init" (the starting policy); "" means "init" with ``init_from``, else
    "base". ``updates_per_batch`` (0: ``ppo.ppo_epochs`` for PPO, 1 for SFT) sets both
    algorithms' optimizer updates per batch: the same value gives compute-matched arms."""

    algo: Literal["ppo", "sft"] = "ppo"
    data: str = ""
    model: str = "embedded"
    steps: int = 200
    batch_size: int = 8
    grad_accum: int = 1
    packing: bool = True
    loss_normalization: Literal["tokens", "records"] = "tokens"
    seq_buckets: tuple[int, ...] = (512, 1024, 1536, 2048)
    action_buckets: tuple[int, ...] = (32, 64, 128, 256, 512)
    full_finetune: bool = False
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    dtype: Literal["float32", "bfloat16"] = "float32"
    remat: bool = False
    mesh_shape: tuple[int, ...] = (1, 1, 1)
    seed: int = 0
    log_every: int = 1
    init_from: str = ""
    init_step: int = 0
    reference: Literal["", "base", "init"] = ""
    updates_per_batch: int = 0
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    ppo: PPOConfig = dataclasses.field(default_factory=PPOConfig)
    candidates: CandidateConfig = dataclasses.field(default_factory=CandidateConfig)
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    hardware: HardwareConfig = dataclasses.field(default_factory=HardwareConfig)

    def __post_init__(self):
        if self.algo not in ("ppo", "sft"):
            raise ValueError(f"algo must be 'ppo' or 'sft', got {self.algo!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.loss_normalization not in ("tokens", "records"):
            raise ValueError(f"loss_normalization must be 'tokens' or 'records', got {self.loss_normalization!r}")
        if not self.seq_buckets or any(b < 2 for b in self.seq_buckets):
            raise ValueError(f"seq_buckets must be a non-empty list of lengths >= 2, got {self.seq_buckets}")
        object.__setattr__(self, "seq_buckets", tuple(sorted(set(self.seq_buckets))))
        if not self.action_buckets or any(b < 1 for b in self.action_buckets):
            raise ValueError(f"action_buckets must be a non-empty list of lengths >= 1, got {self.action_buckets}")
        object.__setattr__(self, "action_buckets", tuple(sorted(set(self.action_buckets))))
        if len(self.mesh_shape) != 3:
            raise ValueError(f"mesh_shape must be (data, fsdp, tensor), got {self.mesh_shape}")
        if self.full_finetune == (self.lora.rank > 0):
            raise ValueError(
                "choose one: LoRA (lora.rank > 0, full_finetune=false) or full fine-tuning "
                f"(lora.rank = 0, full_finetune=true); got lora.rank={self.lora.rank}, "
                f"full_finetune={self.full_finetune}"
            )
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if self.reference not in ("", "base", "init"):
            raise ValueError(f"reference must be 'base' or 'init', got {self.reference!r}")
        if self.reference == "init" and not self.init_from and self.lora.rank > 0:
            raise ValueError("reference=init needs init_from (a LoRA run's initial adapters are zero: use base)")
        if self.init_step < 0 or self.updates_per_batch < 0:
            raise ValueError("init_step and updates_per_batch must be >= 0")

    @property
    def updates_per_step(self) -> int:
        if self.updates_per_batch:
            return self.updates_per_batch
        return self.ppo.ppo_epochs if self.algo == "ppo" else 1

    @property
    def kl_reference(self) -> str:
        """"base" or "init" (the default with ``init_from``)."""
        return self.reference or ("init" if self.init_from else "base")


# Keys that may differ between a run and its resumption. grad_accum is one: the update does not
# depend on it (loss weights are normalised over the whole batch), and the planner may pick
# another on a machine with more or less memory; remat recomputes the same activations.
RESUMABLE_DIFFERENCES = frozenset({"grad_accum", "remat", "log_every", "checkpoint.every", "checkpoint.keep",
                                   "checkpoint.async_save", "hardware.device", "hardware.device_memory_gb"})


CONFIG_NAME = "config.yaml"


def read_run_config(run_dir: str | pathlib.Path) -> TrainConfig:
    """The TrainConfig a ``spark-jax train`` run directory was trained with."""
    path = run_path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {CONFIG_NAME}; is this a `spark-jax train` output directory?")
    if is_remote(path):
        return load_config(TrainConfig, base=yaml.safe_load(path.read_text()) or {})
    return load_config(TrainConfig, path)
