"""The train step projects only the action positions onto the vocabulary: its losses must equal
the same formulas on the full [B, T, V] logits with the [B, T] loss mask."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spark_jax.config_io import load_config
from spark_jax.rl import ppo as ppo_lib
from spark_jax.rl.adapters import adapters_off, path_str
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.sft import sft_loss
from spark_jax.rl.trainer import Trainer

CONFIG = pathlib.Path(__file__).parents[2] / "configs" / "tiny.yaml"


def _trainer(model_dir, run_dir, out, *overrides):
    cfg = load_config(TrainConfig, CONFIG, [f"model={model_dir}", f"data={run_dir}", "seq_buckets=[128]",
                                            "action_buckets=[8,16,32,64]", "batch_size=4", "grad_accum=1", *overrides])
    return Trainer(cfg, out)


def _full_logits(trainer, params, batch):
    model = nnx.merge(trainer.policy_graphdef, params, trainer.frozen["policy"])
    logits, _ = model(jnp.asarray(batch["input_ids"]), None, jnp.asarray(batch["attention_mask"]))
    return logits


@pytest.mark.parametrize("algo", ["sft", "ppo"])
def test_action_position_losses_equal_full_logit_losses(algo, tiny_model_dir, stage1_run, tmp_path):
    t = _trainer(tiny_model_dir, stage1_run, tmp_path / algo, f"algo={algo}", "ppo.ppo_epochs=1",
                 "optim.warmup_steps=0")
    try:
        batch = next(t.data)
        assert batch["action_positions"].shape[1] < batch["input_ids"].shape[1]  # the point of it
        # Give the adapters non-zero B so the policy differs from the reference.
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: x + 0.02 if path_str(p).endswith("kernel_lora_b") else x,
            t.state["params"])
        t.state = {**t.state, "params": params}
        policy = params["policy"]
        logits = _full_logits(t, policy, batch)
        targets, mask = jnp.asarray(batch["targets"]), jnp.asarray(batch["loss_mask"])
        ref_logp = ppo_lib.token_logprobs(_full_logits(t, adapters_off(policy), batch), targets)
        logp = ppo_lib.token_logprobs(logits, targets)
        kl = ppo_lib.masked_mean(ppo_lib.kl_estimate(logp, ref_logp, t.cfg.ppo.kl_estimator), mask)
        if algo == "sft":
            expected = sft_loss(logits, targets, mask)[0]
        else:
            adv = ppo_lib.advantages_from_rewards(jnp.asarray(batch["reward"]), True, t.cfg.ppo.adv_eps)
            expected = ppo_lib.ppo_loss_from_logits(logits, targets, logp, ref_logp, adv, mask, t.cfg.ppo)[0]
        _, metrics = t._step(t.state, t.frozen, t.ref, t._put_batch(batch))
        assert float(metrics["kl"]) > 1e-6
        np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(metrics["kl"]), float(kl), rtol=1e-4, atol=1e-7)
        assert float(metrics["action_tokens"]) == float(mask.sum())
    finally:
        t.close()


def test_ppo_epochs_keep_the_snapshot_log_probs(tiny_model_dir, stage1_run, tmp_path):
    """Two PPO updates on one batch: the second update's ratio is against the log-probs of the
    parameters at the start of the step (taken from the first update's forward pass), as in a
    reference loop that computes them in a separate pass."""
    t = _trainer(tiny_model_dir, stage1_run, tmp_path / "ppo2", "algo=ppo", "ppo.ppo_epochs=2",
                 "optim.warmup_steps=0", "optim.lr=0.05")
    try:
        batch = next(t.data)
        params = jax.tree_util.tree_map_with_path(
            lambda p, x: x + 0.02 if path_str(p).endswith("kernel_lora_b") else x, t.state["params"])
        t.state = {**t.state, "params": params}
        targets, mask = jnp.asarray(batch["targets"]), jnp.asarray(batch["loss_mask"])
        ref_logp = ppo_lib.token_logprobs(_full_logits(t, adapters_off(params["policy"]), batch), targets)
        old_logp = ppo_lib.token_logprobs(_full_logits(t, params["policy"], batch), targets)
        adv = ppo_lib.advantages_from_rewards(jnp.asarray(batch["reward"]), True, t.cfg.ppo.adv_eps)

        def loss(p):
            logits = _full_logits(t, p["policy"], batch)
            return ppo_lib.ppo_loss_from_logits(logits, targets, old_logp, ref_logp, adv, mask, t.cfg.ppo)

        want, opt_state, clip = params, t.state["opt_state"], []
        for _ in range(2):
            (_, m), grads = jax.value_and_grad(loss, has_aux=True)(want)
            updates, opt_state = t.optimizer.update(grads, opt_state, want)
            want = jax.tree.map(jnp.add, want, updates)
            clip.append(float(m["clip_frac"]))
        new_state, metrics = t._step(t.state, t.frozen, t.ref, t._put_batch(batch))
        assert clip[1] > 0  # the second update is off-policy enough to clip: the test can tell
        np.testing.assert_allclose(float(metrics["clip_frac_last_epoch"]), clip[1], atol=1e-6)
        for got, exp in zip(jax.tree.leaves(new_state["params"]), jax.tree.leaves(want)):
            # Adam steps are ~lr = 0.05 per element; 5e-5 absorbs float32 noise on near-zero grads.
            np.testing.assert_allclose(np.asarray(got), np.asarray(exp), rtol=1e-4, atol=5e-5)
    finally:
        t.close()
