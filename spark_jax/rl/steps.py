"""The jitted train step: PPO (or SFT) updates over one batch, as a pure function.

State pytree: ``{"params", "opt_state", "step", "rng"}`` where ``params`` is
``{"policy": trainable State, ["critic": trainable State]}``. Frozen weights (the base under
LoRA, or the whole reference policy under full fine-tuning) come in as separate arguments.

One call = one batch: the batch is cut into ``grad_accum`` micro-batches; a first pass computes
the reference log-probs (adapters off, or the frozen initial weights) and the advantages; then
``ppo_epochs`` optimizer updates each accumulate gradients over the micro-batches in a
``lax.scan``. The old log-probs (the policy snapshot at the start of this PPO iteration) are
the first update's own forward pass, held without gradient: its parameters are the snapshot,
so a separate forward pass for them would compute the same numbers (the first update sees
ratio 1 exactly). Metrics are means over epochs and micro-batches.

Log-probs, masks and losses live on the batch's ``action_positions`` ([B, A], see
``spark_jax.data.pipeline``): only those rows of the hidden states are projected onto the vocabulary.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from spark_jax.model.llama import positions_from_mask
from spark_jax.rl import ppo as ppo_lib
from spark_jax.rl.adapters import adapters_off
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.critic import state_values
from spark_jax.rl.sft import sft_loss

BATCH_KEYS = ("input_ids", "targets", "attention_mask", "loss_mask", "reward", "action_positions", "action_mask")


def split_micro(batch: dict[str, jax.Array], n: int) -> dict[str, jax.Array]:
    """[B, ...] -> [n, B / n, ...] for every array; micro-batch ``i`` holds rows i, i + n, i + 2n, ...

    Strided, not in blocks: the batch is sharded over devices in contiguous blocks of rows, so
    every block holds rows of every micro-batch and each micro-batch stays spread over all
    devices. A block split ([n, B / n] reshape) makes XLA all-gather the batch and replicate
    every micro-batch on every device (no data parallelism, full activations per device).
    """
    return {k: v.reshape((v.shape[0] // n, n) + v.shape[1:]).swapaxes(0, 1) for k, v in batch.items()}


def merge_micro(micro: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The inverse of ``split_micro``: [n, B / n, ...] -> [B, ...] in the batch's row order."""
    return {k: v.swapaxes(0, 1).reshape((-1,) + v.shape[2:]) for k, v in micro.items()}


def make_train_step(
    cfg: TrainConfig,
    policy_graphdef: nnx.GraphDef,
    critic_graphdef: nnx.GraphDef | None,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> Callable:
    """``step(state, frozen, ref, batch) -> (state, metrics)``; ``ref`` is None under LoRA."""
    pcfg = cfg.ppo
    use_lora = cfg.lora.rank > 0
    use_critic = cfg.algo == "ppo" and pcfg.advantage == "value"
    accum = cfg.grad_accum

    def policy_logits(params, frozen, mb):
        """Logits [b, A, V] at the action positions only: the vocabulary projection and its
        log-softmax (and their backward) cost A rows instead of T."""
        model = nnx.merge(policy_graphdef, params, frozen)
        mask = mb["attention_mask"]
        hidden, _ = model.hidden_states(mb["input_ids"], positions_from_mask(mask, mask.shape), mask)
        picked = jnp.take_along_axis(hidden, mb["action_positions"][..., None], axis=1)
        return model.project(picked)

    def critic_value(params, frozen, mb):
        model = nnx.merge(critic_graphdef, params, frozen)
        return state_values(model(mb["input_ids"], None, mb["attention_mask"]), mb["loss_mask"])

    def prepare(params, frozen, ref, mb):
        ref_params = adapters_off(params["policy"]) if use_lora else ref
        out = {"ref_logp": ppo_lib.token_logprobs(policy_logits(ref_params, frozen["policy"], mb), mb["action_targets"])}
        if use_critic:
            out["old_value"] = critic_value(params["critic"], frozen["critic"], mb)
        return out

    def loss_fn(params, frozen, mb, old_logp, first_update):
        """(loss, (metrics, log-probs [b, A] without gradient)); ``old_logp`` is ignored in the
        first update, whose own log-probs are the snapshot's."""
        logits = policy_logits(params["policy"], frozen["policy"], mb)
        mask = mb["action_mask"]
        logp = ppo_lib.token_logprobs(logits, mb["action_targets"])
        sg_logp = jax.lax.stop_gradient(logp)
        if cfg.algo == "sft":
            loss, m = sft_loss(logits, mb["action_targets"], mask)
            sg_logits = jax.lax.stop_gradient(logits)
            m["entropy"] = ppo_lib.masked_mean(ppo_lib.token_entropy(sg_logits), mask)
            m["kl"] = ppo_lib.masked_mean(ppo_lib.kl_estimate(sg_logp, mb["ref_logp"], pcfg.kl_estimator), mask)
            return loss, (m, sg_logp)
        old_logp = jnp.where(first_update, sg_logp, old_logp)
        loss, m = ppo_lib.ppo_loss_from_logits(
            logits, mb["action_targets"], old_logp, mb["ref_logp"], mb["adv"], mask, pcfg)
        if use_critic:
            vl = ppo_lib.value_loss(critic_value(params["critic"], frozen["critic"], mb), mb["reward"])
            loss = loss + pcfg.vf_coef * vl
            m["value_loss"] = vl
            m["loss"] = loss
        return loss, (m, sg_logp)

    def advantages(batch, prep):
        r = batch["reward"]
        if pcfg.advantage == "value":
            return ppo_lib.advantages_from_values(r, prep["old_value"])
        return ppo_lib.advantages_from_rewards(r, pcfg.advantage == "batch_norm", pcfg.adv_eps)

    def step(state, frozen, ref, batch):
        batch = {k: batch[k] for k in BATCH_KEYS}
        batch["action_targets"] = jnp.take_along_axis(batch["targets"], batch["action_positions"], axis=1)
        micro = split_micro(batch, accum)
        prep = jax.lax.map(lambda mb: prepare(state["params"], frozen, ref, mb), micro)
        flat_prep = merge_micro(prep)
        if cfg.algo == "ppo":
            prep["adv"] = split_micro({"adv": advantages(batch, flat_prep)}, accum)["adv"]
        micro = {**micro, **prep}
        epochs = cfg.updates_per_step

        def one_update(carry, epoch):
            params, opt_state, old_logp = carry
            first_update = epoch == 0

            def one_micro(gsum, xs):
                mb, mb_old = xs
                (_, (m, logp)), g = jax.value_and_grad(loss_fn, has_aux=True)(
                    params, frozen, mb, mb_old, first_update)
                return jax.tree.map(jnp.add, gsum, g), (m, logp)

            zeros = jax.tree.map(jnp.zeros_like, params)
            gsum, (ms, logp) = jax.lax.scan(one_micro, zeros, (micro, old_logp))
            grads = jax.tree.map(lambda g: g / accum, gsum)
            grad_norm = optax.global_norm(grads)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ms = jax.tree.map(lambda x: x.mean(0), ms)
            ms["grad_norm"] = grad_norm
            old_logp = jnp.where(first_update, logp, old_logp)  # the snapshot, for later updates
            return (params, opt_state, old_logp), ms

        no_old_logp = jnp.zeros(micro["action_mask"].shape, jnp.float32)
        (params, opt_state, _), ms = jax.lax.scan(
            one_update, (state["params"], state["opt_state"], no_old_logp), jnp.arange(epochs))
        metrics = jax.tree.map(lambda x: x.mean(0), ms)
        if cfg.algo == "ppo":
            metrics["clip_frac_last_epoch"] = ms["clip_frac"][-1]
            metrics["adv_std"] = prep["adv"].std()
        metrics["lr"] = schedule(state["step"] * epochs)
        metrics["reward_mean"] = batch["reward"].mean()
        metrics["action_tokens"] = batch["action_mask"].sum()
        metrics["tokens"] = batch["attention_mask"].sum()
        rng, _ = jax.random.split(state["rng"])
        new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": rng}
        return new_state, metrics

    return step


def init_state(params: Any, optimizer: optax.GradientTransformation, seed: int) -> dict[str, Any]:
    return {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.PRNGKey(seed),
    }
