"""The Stage 2 trainer: models, mesh, jitted step, checkpoints, resume, metrics.

A run directory (a local path or a ``gs://`` URL, through etils.epath) holds ``config.yaml`` (the full TrainConfig), ``checkpoints/``,
``metrics.jsonl`` (one JSON object per step) and TensorBoard event files (``tb/``).
Starting a trainer on a directory with checkpoints resumes from the latest one, provided
the config is the same (``log_every`` and checkpoint cadence may differ).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx
from tqdm.auto import tqdm

from spark_jax.core.config_io import ConfigError, to_dict
from spark_jax.core.storage import is_remote, local_stage1_run, run_path
from spark_jax.data.packing import KIND_NAMES
from spark_jax.data.pipeline import build_input
from spark_jax.model.llama import Llama
from spark_jax.model.pretrained import load_checkpoint
from spark_jax.model.sharding import batch_sharding, make_mesh, replicated, state_shardings
from spark_jax.rl.adapters import apply_lora, trainable_filter
from spark_jax.rl.checkpointing import RunCheckpoints, abstract_like
from spark_jax.rl.config import CONFIG_NAME, RESUMABLE_DIFFERENCES, TrainConfig, read_run_config
from spark_jax.rl.critic import Critic
from spark_jax.rl.optim import lr_schedule, make_optimizer
from spark_jax.rl.steps import BATCH_KEYS, init_state, make_train_step
from spark_jax.rl.warm_start import resolve_warm_start, source_params

log = logging.getLogger(__name__)

__all__ = ["CONFIG_NAME", "METRICS_NAME", "Trainer", "read_run_config", "build_models", "load_base_model",
           "split_trainable"]
METRICS_NAME = "metrics.jsonl"


def load_base_model(cfg: TrainConfig, mesh=None) -> tuple[Llama, Any]:
    """(model, tokenizer) from ``cfg.model`` with the run's dtypes."""
    model, tokenizer = load_checkpoint(cfg.model, mesh=mesh, param_dtype=cfg.param_dtype, dtype=cfg.dtype)
    if tokenizer is None:
        raise FileNotFoundError(f"{cfg.model}: no tokenizer files; training needs the model's chat template")
    return model, tokenizer


def _set_remat(module: nnx.Module, remat: bool) -> None:
    # Adapters are created by running the model once, outside remat; remat is switched on after.
    for _, m in nnx.iter_modules(module):
        if isinstance(m, Llama):
            m.config = m.config.replace(remat=remat)


def build_models(cfg: TrainConfig, base: Llama) -> tuple[nnx.Module, nnx.Module | None]:
    """The policy (with adapters unless full fine-tuning) and, for advantage="value", the critic."""
    critic = None
    if cfg.algo == "ppo" and cfg.ppo.advantage == "value":
        graphdef, weights = nnx.split(base)
        if cfg.lora.rank == 0:
            # Both copies are trained (and their buffers donated): they must not share arrays.
            # Under LoRA the frozen base weights are shared between policy and critic.
            weights = jax.tree.map(jnp.copy, weights)
        critic = Critic(nnx.merge(graphdef, weights), rngs=nnx.Rngs(cfg.seed + 1))
    if cfg.lora.rank > 0:
        policy = apply_lora(base, cfg.lora, seed=cfg.seed)
        if critic is not None:
            critic = apply_lora(critic, cfg.lora, seed=cfg.seed + 2)
    else:
        policy = base
    for m in (policy, critic):
        if m is not None and cfg.remat:
            _set_remat(m, True)
    return policy, critic


def split_trainable(module: nnx.Module, cfg: TrainConfig, *, critic: bool = False):
    """(graphdef, trainable state, frozen state)."""
    filt = trainable_filter(cfg.lora)
    if critic and cfg.lora.rank > 0:
        filt = nnx.Any(filt, nnx.PathContains("value_head"))
    return nnx.split(module, filt, ...)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def config_differences(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUMABLE_DIFFERENCES)


def _mesh_devices(shape) -> list:
    """All devices; on a single host a smaller mesh may use the first prod(shape) of them."""
    n, devices = int(np.prod(shape)), jax.devices()
    if jax.process_count() == 1 and n < len(devices):
        log.warning("mesh %s uses %d of the %d devices", tuple(shape), n, len(devices))
        return devices[:n]
    return devices


class MetricsLog:
    """``metrics.jsonl`` + TensorBoard, written by process 0 only.

    Local files are appended to; object stores (``gs://``) cannot append, so there the whole
    file is rewritten at each write (a few KB per hundred steps)."""

    def __init__(self, out, start_step: int):
        self.enabled = jax.process_index() == 0
        self.path = out / METRICS_NAME
        self.remote = is_remote(self.path)
        self.lines: list[str] = []
        self.tb = None
        if not self.enabled:
            return
        if self.path.exists():  # drop steps after the checkpoint we resume from
            self.lines = [ln for ln in self.path.read_text().splitlines()
                          if ln.strip() and json.loads(ln)["step"] <= start_step]
            self.path.write_text("".join(ln + "\n" for ln in self.lines))
        try:
            # deferred: tensorboardX is optional; without it the run logs JSONL only
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            log.warning("tensorboardX is not installed: no TensorBoard events")

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(row)
        self.lines.append(line)
        if self.remote:
            self.path.write_text("".join(ln + "\n" for ln in self.lines))
        else:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | pathlib.Path):
        # a warm start names the source checkpoint it used, so a resume checks it
        cfg = self.cfg = resolve_warm_start(cfg)
        self.out = run_path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoints = RunCheckpoints(
            self.out / "checkpoints", every=cfg.checkpoint.every, keep=cfg.checkpoint.keep,
            async_save=cfg.checkpoint.async_save,
        )
        self._check_config()
        self.mesh = make_mesh(cfg.mesh_shape, _mesh_devices(cfg.mesh_shape))
        base, self.tokenizer = load_base_model(cfg, self.mesh)
        policy, critic = build_models(cfg, base)
        self.policy_graphdef, p_train, p_frozen = split_trainable(policy, cfg)
        base_train = p_train
        if cfg.init_from:
            p_train = source_params(cfg, p_train)
            log.info("warm start from %s step %d; KL reference: %s", cfg.init_from, cfg.init_step, cfg.kl_reference)
        params, frozen = {"policy": p_train}, {"policy": p_frozen}
        self.critic_graphdef = None
        if critic is not None:
            self.critic_graphdef, c_train, c_frozen = split_trainable(critic, cfg, critic=True)
            params["critic"], frozen["critic"] = c_train, c_frozen
        total_updates = cfg.steps * cfg.updates_per_step
        self.schedule = lr_schedule(cfg.optim, total_updates)
        self.optimizer = make_optimizer(cfg.optim, total_updates)

        mesh = self.mesh
        self.frozen = jax.device_put(frozen, state_shardings(frozen, mesh))
        # The KL reference: the initial weights ("init"), or the base: LoRA turns the adapters off,
        # full fine-tuning keeps the base weights.
        self.ref = None
        ref_weights = p_train if cfg.kl_reference == "init" else base_train
        if cfg.lora.rank == 0 or cfg.kl_reference == "init":
            self.ref = jax.device_put(jax.tree.map(jnp.copy, ref_weights), state_shardings(ref_weights, mesh))
        state = init_state(params, self.optimizer)
        self.state_shardings = state_shardings(state, mesh)
        self.state = jax.device_put(state, self.state_shardings)

        pc, pi = jax.process_count(), jax.process_index()
        if cfg.batch_size % pc:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {pc} processes")
        self.data, self.data_stats = build_input(
            local_stage1_run(cfg.data), self.tokenizer, batch_size=cfg.batch_size // pc, buckets=cfg.seq_buckets,
            seed=cfg.seed, process_index=pi, process_count=pc, action_buckets=cfg.action_buckets,
            packing=cfg.packing, gamma=cfg.ppo.gamma,
        )
        log.info("training rows: %d (%d of %d records%s), %d input tokens", self.data_stats.rows,
                 self.data_stats.kept_records, self.data_stats.records,
                 f", {self.data_stats.trajectories} trajectories packed" if cfg.packing else "",
                 self.data_stats.tokens)
        self._batch_sharding = batch_sharding(mesh, (cfg.batch_size,))
        step_fn = make_train_step(cfg, self.policy_graphdef, self.critic_graphdef, self.optimizer, self.schedule)
        ref_sh = None if self.ref is None else state_shardings(self.ref, mesh)
        self._step = jax.jit(
            step_fn,
            in_shardings=(self.state_shardings, state_shardings(self.frozen, mesh), ref_sh,
                          {k: self._batch_sharding for k in BATCH_KEYS}),
            out_shardings=(self.state_shardings, replicated(mesh)),
            donate_argnums=(0,),
        )
        self._shapes_seen: set[tuple] = set()
        self.step = 0
        latest = self.checkpoints.latest_step()
        if latest is not None:
            self.state, data_state = self.checkpoints.restore(latest, abstract_like(self.state))
            self.data.set_state(data_state)
            self.step = int(jax.device_get(self.state["step"]))
            if self.step != latest:
                raise RuntimeError(f"checkpoint {latest} holds step {self.step}; the checkpoint is inconsistent")
            log.info("resumed from %s at step %d", self.checkpoints.directory, self.step)

    # ---- config ---------------------------------------------------------------------------

    def _check_config(self) -> None:
        path = self.out / CONFIG_NAME
        new = to_dict(self.cfg)
        if path.is_file() and self.checkpoints.latest_step() is not None:
            old = yaml.safe_load(path.read_text()) or {}
            diffs = config_differences(old, new)
            if diffs:
                was, now = _flatten(old), _flatten(new)
                changed = "; ".join(f"{k}: {_short(was.get(k))} in {CONFIG_NAME}, {_short(now.get(k))} now"
                                    for k in diffs)
                raise ConfigError(
                    f"{self.out} holds checkpoints of a run with a different config ({changed}); "
                    "use a new --out directory or the same config to resume (a moved run folder keeps the "
                    "paths it was trained with)"
                )
        if jax.process_index() == 0:
            path.write_text(yaml.safe_dump(new, sort_keys=False))

    # ---- training ---------------------------------------------------------------------------

    def _put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {
            k: jax.make_array_from_process_local_data(self._batch_sharding, batch[k],
                                                      (self.cfg.batch_size,) + batch[k].shape[1:])
            for k in BATCH_KEYS
        }

    def run(self, until_step: int | None = None, *, progress: bool = True) -> list[dict[str, Any]]:
        """Trains up to ``until_step`` (default ``cfg.steps``); returns this call's metric rows."""
        cfg = self.cfg
        end = min(cfg.steps, cfg.steps if until_step is None else until_step)
        metrics_log = MetricsLog(self.out, self.step)
        rows = []
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.algo}",
                   disable=not progress or jax.process_index() != 0, unit="step")
        try:
            while self.step < end:
                batch = next(self.data)
                shape = batch["input_ids"].shape
                if shape not in self._shapes_seen:
                    self._shapes_seen.add(shape)
                    log.info("compiling the train step for batch shape %s", shape)
                t0 = time.perf_counter()
                self.state, metrics = self._step(self.state, self.frozen, self.ref, self._put_batch(batch))
                metrics = jax.device_get(metrics)
                dt = time.perf_counter() - t0
                self.step += 1
                row = self._row(metrics, dt)
                rows.append(row)
                if self.step % cfg.log_every == 0 or self.step == end:
                    metrics_log.write(row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", kl=f"{row['kl']:.4f}")
                if self.step % cfg.checkpoint.every == 0 or self.step == cfg.steps:
                    self.checkpoints.save(self.step, self.state, self.data.get_state())
                bar.update(1)
        finally:
            bar.close()
            self.checkpoints.wait()
            metrics_log.close()
        return rows

    def _row(self, metrics: dict[str, Any], dt: float) -> dict[str, Any]:
        m = {k: float(v) for k, v in metrics.items()}
        # a diagnostic group without tokens in this batch (NaN) is logged as null, not as a number
        m = {k: (None if k.startswith(("kl_", "dlogp_", "format_")) and not math.isfinite(v) else v)
             for k, v in m.items()}
        row = {
            "step": self.step,
            "loss": m.pop("loss"),
            "kl": m.pop("kl"),
            "clip_frac": m.pop("clip_frac", None),
            "entropy": m.pop("entropy"),
            "lr": m.pop("lr"),
            "grad_norm": m.pop("grad_norm"),
            "tokens_per_s": m["tokens"] * self.cfg.updates_per_step / dt,
            "records_per_s": m["records"] / dt,
            "step_time_s": dt,
        }
        for name in KIND_NAMES:  # the data's own reward per step kind (None: no such step in the batch)
            n, total = m.pop(f"records_{name}"), m.pop(f"reward_sum_{name}")
            row[f"reward_{name}"] = total / n if n else None
        row.update(m)
        return row

    def close(self) -> None:
        self.checkpoints.wait()
        self.checkpoints.close()

    # ---- access for export and tests -------------------------------------------------------

    def policy_module(self) -> nnx.Module:
        return nnx.merge(self.policy_graphdef, self.state["params"]["policy"], self.frozen["policy"])
