"""From a training run directory to usable weights: merged HF safetensors, PEFT adapters,
or a ``PretrainedModel`` (merged weights) for generation in evaluation."""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
from flax import nnx

from spark_jax.core.storage import run_path
from spark_jax.model.checkpoint_hf import export_hf
from spark_jax.model.pretrained import PretrainedModel
from spark_jax.model.sharding import make_mesh, state_shardings
from spark_jax.rl.adapters import export_peft, merged_model
from spark_jax.rl.checkpointing import RunCheckpoints
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.optim import make_optimizer
from spark_jax.rl.steps import init_state
from spark_jax.rl.trainer import build_models, load_base_model, read_run_config, split_trainable

log = logging.getLogger(__name__)


def load_trained_policy(run_dir: str | pathlib.Path, step: int | None = None) -> tuple[nnx.Module, TrainConfig, Any]:
    """(policy module with the checkpoint's weights, its config, tokenizer); latest step by default."""
    run_dir = run_path(run_dir)
    cfg = read_run_config(run_dir)
    ckpts = RunCheckpoints(run_dir / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep,
                           async_save=False)
    try:
        step = ckpts.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{run_dir}/checkpoints holds no committed checkpoint")
        base, tokenizer = load_base_model(cfg)
        policy, critic = build_models(cfg, base)
        graphdef, p_train, p_frozen = split_trainable(policy, cfg)
        params = {"policy": p_train}
        if critic is not None:
            params["critic"] = split_trainable(critic, cfg, critic=True)[1]
        optimizer = make_optimizer(cfg.optim, cfg.steps * cfg.updates_per_step)
        abstract = jax.eval_shape(lambda p: init_state(p, optimizer), params)
        shardings = state_shardings(abstract, make_mesh((1, 1, 1), jax.devices()[:1]))
        abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                abstract, shardings)
        state, _ = ckpts.restore(step, abstract)
    finally:
        ckpts.close()
    log.info("loaded %s step %d", run_dir, step)
    return nnx.merge(graphdef, state["params"]["policy"], p_frozen), cfg, tokenizer


def plain_policy(policy: nnx.Module, cfg: TrainConfig):
    """A plain ``Llama``: adapters merged into the weights (NF4 bases dequantised)."""
    return merged_model(policy, cfg.lora) if cfg.lora.rank > 0 else policy


def pretrained_from_run(run_dir: str | pathlib.Path, *, mesh=None) -> PretrainedModel:
    """The trained policy behind ``load_pretrained``'s API (``.logits``, ``.generate``)."""
    policy, cfg, tokenizer = load_trained_policy(run_dir)
    return PretrainedModel(plain_policy(policy, cfg), tokenizer, mesh)


def export_run(run_dir: str | pathlib.Path, hf_out: str | pathlib.Path | None,
               peft_out: str | pathlib.Path | None = None) -> dict[str, str]:
    policy, cfg, tokenizer = load_trained_policy(run_dir)
    written = {}
    if peft_out is not None:
        if cfg.lora.rank == 0:
            raise ValueError(f"{run_dir} is a full fine-tuning run: there is no adapter to export with --peft")
        written["peft"] = str(export_peft(policy, cfg.lora, peft_out, base_model_name_or_path=cfg.model))
    if hf_out is not None:
        written["hf"] = str(export_hf(plain_policy(policy, cfg), hf_out, tokenizer=tokenizer,
                                      dtype=cfg.param_dtype))
    return written
