"""The train step: losses at the action positions equal the formulas on full logits, the update
does not depend on grad_accum, the first update moves the model, PPO epochs keep the snapshot."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spark_jax.core.config_io import load_config
from spark_jax.rl import advantages as A
from spark_jax.rl import ppo as ppo_lib
from spark_jax.rl.adapters import adapters_off, path_str
from spark_jax.rl.config import OptimConfig, TrainConfig
from spark_jax.rl.optim import lr_schedule
from spark_jax.rl.sft import sft_loss
from spark_jax.rl.trainer import Trainer

CONFIG = pathlib.Path(__file__).parents[2] / "configs" / "tiny.yaml"


def _trainer(model_dir, run_dir, out, *overrides):
    cfg = load_config(TrainConfig, CONFIG, [f"model={model_dir}", f"data={run_dir}", "seq_buckets=[256]",
                                            "action_buckets=[8,16,32,64]", "batch_size=4", "grad_accum=1", *overrides])
    return Trainer(cfg, out)


def _action_logits(trainer, params, batch):
    """Full [B, T, V] logits of the whole model, then the action positions' rows."""
    model = nnx.merge(trainer.policy_graphdef, params, trainer.frozen["policy"])
    logits, _ = model(jnp.asarray(batch["input_ids"]), None, jnp.asarray(batch["attention_mask"]))
    return jnp.take_along_axis(logits, jnp.asarray(batch["action_positions"])[..., None], axis=1)


def _with_nonzero_b(state, value=0.02):
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + value if path_str(p).endswith("kernel_lora_b") else x, state["params"])
    return {**state, "params": params}


@pytest.mark.parametrize("algo", ["sft", "ppo"])
def test_action_position_losses_equal_full_logit_losses(algo, tiny_model_dir, stage1_run, tmp_path):
    t = _trainer(tiny_model_dir, stage1_run, tmp_path / algo, f"algo={algo}", "ppo.ppo_epochs=1",
                 "optim.warmup_steps=0")
    try:
        batch = next(t.data)
        assert batch["action_positions"].shape[1] < batch["input_ids"].shape[1]  # the point of it
        assert batch["span_mask"].sum() > batch["span_mask"].shape[0]  # packed: several steps per row
        t.state = _with_nonzero_b(t.state)  # the policy differs from the reference
        policy = t.state["params"]["policy"]
        logits = _action_logits(t, policy, batch)
        targets = jnp.take_along_axis(jnp.asarray(batch["targets"]), jnp.asarray(batch["action_positions"]), 1)
        ref_logits = _action_logits(t, adapters_off(policy), batch)
        logp = ppo_lib.token_logprobs(logits, targets)
        span = jnp.asarray(batch["action_span"])
        w = ppo_lib.loss_weights(jnp.asarray(batch["action_mask"]), span, jnp.asarray(batch["span_mask"]), "tokens")
        kl_tok = ppo_lib.full_kl(logits, jax.nn.log_softmax(ref_logits, -1))
        if algo == "sft":
            expected = sft_loss(logp, w)[0]
        else:
            adv, _ = A.span_advantages(*(jnp.asarray(batch[k]) for k in ("span_return", "span_kind", "span_step",
                                                                           "span_mask")),
                                       A.init_stats(), method="running_norm", groups="step", decay=0.99, eps=1e-6)
            adv_tok = jnp.take_along_axis(adv, span, 1) * jnp.asarray(batch["action_mask"])
            expected = ppo_lib.ppo_loss(logp, logp, adv_tok, w, kl_tok, t.cfg.ppo, action_span_ba=span,
                                        num_spans=batch["span_mask"].shape[1])[0]
        _, metrics = t._step(t.state, t.frozen, t.ref, t._put_batch(batch))
        assert float(metrics["kl"]) > 1e-6
        np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(metrics["kl"]), float((w * kl_tok).sum()), rtol=1e-4, atol=1e-7)
        assert float(metrics["action_tokens"]) == float(batch["loss_mask"].sum())
        assert float(metrics["records"]) == float(batch["span_mask"].sum())
    finally:
        t.close()


@pytest.mark.parametrize("algo,norm", [("ppo", "tokens"), ("ppo", "records"), ("sft", "tokens")])
def test_update_does_not_depend_on_grad_accum(algo, norm, tiny_model_dir, stage1_run, tmp_path):
    """batch_size=8 in one micro-batch or in four: the same update within 1e-5. Adam's eps=1
    makes its first step nearly linear in the gradient, so parameters compare gradients."""
    common = [f"algo={algo}", f"loss_normalization={norm}", "batch_size=8", "optim.eps=1.0", "optim.lr=1.0",
              "optim.warmup_steps=0", "ppo.ppo_epochs=2"]
    params = []
    for accum in (1, 4):
        t = _trainer(tiny_model_dir, stage1_run, tmp_path / f"{algo}{norm}{accum}", *common, f"grad_accum={accum}")
        try:
            batch = next(t.data)
            t.state = _with_nonzero_b(t.state)
            new_state, metrics = t._step(t.state, t.frozen, t.ref, t._put_batch(batch))
            params.append((jax.device_get(new_state["params"]), {k: float(v) for k, v in metrics.items()}))
        finally:
            t.close()
    (p1, m1), (p4, m4) = params
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    for k in ("loss", "kl", "entropy", "grad_norm"):
        np.testing.assert_allclose(m1[k], m4[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert m1["grad_norm"] > 1e-4  # a real update, so the comparison can fail


def test_warmup_starts_above_zero_and_one_step_changes_the_merged_logits(tiny_model_dir, stage1_run, tmp_path):
    sched = lr_schedule(OptimConfig(lr=1e-3, warmup_steps=10), 100)
    assert float(sched(0)) == pytest.approx(1e-3 / 11)
    assert float(sched(10)) == pytest.approx(1e-3)
    t = _trainer(tiny_model_dir, stage1_run, tmp_path / "warm", "algo=sft", "optim.warmup_steps=10", "steps=20")
    try:
        batch = next(t.data)
        before = _action_logits(t, t.state["params"]["policy"], batch)
        base = _action_logits(t, adapters_off(t.state["params"]["policy"]), batch)
        np.testing.assert_array_equal(np.asarray(before), np.asarray(base))  # LoRA B starts at 0
        t.state, _ = t._step(t.state, t.frozen, t.ref, t._put_batch(batch))
        after = _action_logits(t, t.state["params"]["policy"], batch)
        assert float(jnp.abs(after - before).max()) > 1e-6
    finally:
        t.close()


def test_ppo_epochs_keep_the_snapshot_log_probs(tiny_model_dir, stage1_run, tmp_path):
    """Two PPO updates on one batch: the second update's ratio is against the log-probs of the
    parameters at the start of the step (taken from the first update's forward pass), as in a
    reference loop that computes them in a separate pass."""
    t = _trainer(tiny_model_dir, stage1_run, tmp_path / "ppo2", "algo=ppo", "ppo.ppo_epochs=2",
                 "ppo.surrogate=ppo", "optim.warmup_steps=0", "optim.lr=0.05")
    try:
        batch = next(t.data)
        t.state = _with_nonzero_b(t.state)
        params = t.state["params"]
        positions = jnp.asarray(batch["action_positions"])
        targets = jnp.take_along_axis(jnp.asarray(batch["targets"]), positions, 1)
        ref_lp = jax.nn.log_softmax(_action_logits(t, adapters_off(params["policy"]), batch), -1)
        old_logp = ppo_lib.token_logprobs(_action_logits(t, params["policy"], batch), targets)
        span = jnp.asarray(batch["action_span"])
        w = ppo_lib.loss_weights(jnp.asarray(batch["action_mask"]), span, jnp.asarray(batch["span_mask"]), "tokens")
        adv, _ = A.span_advantages(*(jnp.asarray(batch[k]) for k in ("span_return", "span_kind", "span_step",
                                                                       "span_mask")),
                                   A.init_stats(), method="running_norm", groups="step", decay=0.99, eps=1e-6)
        adv_tok = jnp.take_along_axis(adv, span, 1) * jnp.asarray(batch["action_mask"])

        def loss(p):
            logits = _action_logits(t, p["policy"], batch)
            logp = ppo_lib.token_logprobs(logits, targets)
            return ppo_lib.ppo_loss(logp, old_logp, adv_tok, w, ppo_lib.full_kl(logits, ref_lp), t.cfg.ppo,
                                    action_span_ba=span, num_spans=batch["span_mask"].shape[1])

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
