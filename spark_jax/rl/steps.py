"""The jitted train step: PPO (or SFT) updates over one batch, as a pure function.

State pytree: ``{"params", "opt_state", "step", "adv_stats"}`` where ``params`` is
``{"policy": trainable State, ["critic": trainable State]}`` and ``adv_stats`` holds the running
return statistics of ``spark_jax.rl.advantages``. Frozen weights (the base under LoRA, or the
whole reference policy under full fine-tuning) come in as separate arguments.

One call = one batch (``spark_jax.data.pipeline``: rows of action spans). The batch is cut into
``grad_accum`` micro-batches; a first pass computes the reference log-probs (adapters off, or
the reference's weights: the frozen initial weights, or a warm start's initial adapters; with
``kl_estimator: full`` also the reference log-softmax at the action positions, and with
``candidates`` the reference's header log-probs) and the critic's values; the per-span
advantages are then computed on the whole batch; then ``updates_per_step`` optimizer updates
each add up gradients over the micro-batches in a ``lax.scan``. With the candidate objective
or its metrics, each row's forward pass also scores the ten action headers at every state
(``spark_jax.rl.candidates``). Loss weights are normalised over the whole batch
(``spark_jax.rl.ppo.loss_weights``), so the update does not depend on ``grad_accum``.

"Old" log-probs are those of the policy at the start of this batch (the snapshot), not of the
policy that wrote the data: they are the first update's own forward pass, held without
gradient (its parameters are the snapshot, so the first update sees ratio 1 exactly).

Log-probs, masks and losses live on the batch's ``action_positions`` ([B, A]): only those rows
of the hidden states are projected onto the vocabulary.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from spark_jax.data.packing import ACTIONS, KIND_NAMES, ROLE_EOT, ROLE_FORMAT, ROLE_HEADER
from spark_jax.model.llama import positions_from_mask
from spark_jax.rl import advantages as adv_lib
from spark_jax.rl import candidates as cand_lib
from spark_jax.rl import ppo as ppo_lib
from spark_jax.rl.adapters import adapters_off
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.sft import sft_loss

BATCH_KEYS = ("input_ids", "targets", "attention_mask", "action_positions", "action_mask", "action_span",
              "span_start", "span_mask", "span_return", "span_reward", "span_kind", "span_step",
              "action_role", "span_selected", "span_cand_score", "span_cand_mask", "cand_rarity",
              "header_ids", "header_action", "header_offset", "header_mask")
# Metrics combined over micro-batches by max / min; every other metric is a weighted sum.
_MAX_METRICS, _MIN_METRICS = ("ratio_max",), ("ratio_min",)
# Diagnostic groups: advantage sign x token part (header: the header's tokens, shared or not).
_SIGNS, _PARTS = ("pos", "neg"), ("header", "input")


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


def combine_micro(ms: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-micro-batch metrics [n] -> batch metrics: sums, except max/min metrics."""
    out = {}
    for k, v in ms.items():
        out[k] = v.max(0) if k in _MAX_METRICS else v.min(0) if k in _MIN_METRICS else v.sum(0)
    return out


def token_diagnostics(logp_ba, ref_logp_ba, kl_ba, adv_ba, action_mask_ba, role_ba) -> dict[str, jax.Array]:
    """Sums and counts (combined over micro-batches, divided by ``finish_diagnostics``): the KL
    to the reference and the change in log-prob from it, by advantage sign and by header
    against input tokens, and the log-prob of the shared format tokens."""
    sg = jax.lax.stop_gradient
    live = action_mask_ba > 0
    d, kl = sg(logp_ba - ref_logp_ba), sg(kl_ba)
    header = (role_ba == ROLE_HEADER) | (role_ba == ROLE_FORMAT)
    out = {"diag_kl_all": jnp.where(live, kl, 0.0).sum(), "diag_n_all": live.sum().astype(jnp.float32)}
    for sign, by_sign in zip(_SIGNS, (adv_ba > 0, adv_ba < 0)):
        for part, by_part in zip(_PARTS, (header, ~header)):
            m = live & by_sign & by_part
            out[f"diag_kl_{sign}_{part}"] = jnp.where(m, kl, 0.0).sum()
            out[f"diag_dlogp_{sign}_{part}"] = jnp.where(m, d, 0.0).sum()
            out[f"diag_n_{sign}_{part}"] = m.sum().astype(jnp.float32)
    fmt = live & ((role_ba == ROLE_FORMAT) | (role_ba == ROLE_EOT))
    out["diag_format_logp"] = jnp.where(fmt, sg(logp_ba), 0.0).sum()
    out["diag_n_format"] = fmt.sum().astype(jnp.float32)
    return out


def finish_diagnostics(m: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Means from ``token_diagnostics``' sums (None-like NaN where a group is empty)."""
    out = {}
    mean = lambda total, n: jnp.where(n > 0, total / jnp.maximum(n, 1.0), jnp.nan)  # noqa: E731
    out["kl_action_tokens"] = mean(m["diag_kl_all"], m["diag_n_all"])
    for sign in _SIGNS:
        for part in _PARTS:
            n = m[f"diag_n_{sign}_{part}"]
            out[f"kl_{sign}_{part}"] = mean(m[f"diag_kl_{sign}_{part}"], n)
            out[f"dlogp_{sign}_{part}"] = mean(m[f"diag_dlogp_{sign}_{part}"], n)
    out["format_logp"] = mean(m["diag_format_logp"], m["diag_n_format"])
    return out


def make_train_step(
    cfg: TrainConfig,
    policy_graphdef: nnx.GraphDef,
    critic_graphdef: nnx.GraphDef | None,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> Callable:
    """``step(state, frozen, ref, batch) -> (state, metrics)``; ``ref`` is None under LoRA with
    the base as reference (the adapters are turned off), else the reference's trainable weights."""
    pcfg, ccfg = cfg.ppo, cfg.candidates
    use_lora = cfg.lora.rank > 0
    use_critic = cfg.algo == "ppo" and pcfg.advantage == "value"
    full_kl = pcfg.kl_estimator == "full"
    headers = ccfg.headers_needed
    accum = cfg.grad_accum

    def forward(params, frozen, mb):
        """(logits [b, A, V] at the action positions, header log-probs [b, S, N] or None)."""
        model = nnx.merge(policy_graphdef, params, frozen)
        mask = mb["attention_mask"]
        if not headers:
            hidden, _ = model.hidden_states(mb["input_ids"], positions_from_mask(mask, mask.shape), mask)
            picked = jnp.take_along_axis(hidden, mb["action_positions"][..., None], axis=1)
            return model.project(picked), None
        ids, pos, valid, allowed, query = cand_lib.extended_inputs(
            mb["input_ids"], mask, mb["span_start"], mb["span_mask"], mb["header_ids"], mb["header_offset"],
            mb["header_mask"])
        hidden, _ = model.hidden_states(ids, pos, valid, allowed_btt=allowed)
        a = mb["action_positions"].shape[1]
        where = jnp.concatenate([mb["action_positions"], query], axis=1)
        logits = model.project(jnp.take_along_axis(hidden, where[..., None], axis=1))
        spans = mb["span_start"].shape[1]
        head_targets = jnp.tile(mb["header_ids"], (1, spans))
        head_lp = ppo_lib.token_logprobs(logits[:, a:], head_targets)
        return logits[:, :a], cand_lib.header_logprobs(head_lp, mb["header_action"], mb["header_mask"], spans,
                                                       len(ACTIONS))

    def critic_value(params, frozen, mb):
        """V(s_t) [b, S]: the value at the last token of each span's state."""
        model = nnx.merge(critic_graphdef, params, frozen)
        values = model(mb["input_ids"], None, mb["attention_mask"])
        return jnp.take_along_axis(values, mb["span_start"], axis=1)

    def prepare(params, frozen, ref, mb):
        ref_params = ref if ref is not None else adapters_off(params["policy"])
        ref_logits, ref_head = forward(ref_params, frozen["policy"], mb)
        out = {"ref_logp": ppo_lib.token_logprobs(ref_logits, mb["action_targets"])}
        if full_kl:
            out["ref_logprobs"] = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
        if headers:
            out["ref_header_logp"] = ref_head
        if use_critic:
            out["old_value"] = critic_value(params["critic"], frozen["critic"], mb)
        return out

    def kl_tokens(logits, logp, mb):
        if full_kl:
            return ppo_lib.full_kl(logits, mb["ref_logprobs"])
        return ppo_lib.k3_kl(logp, mb["ref_logp"])

    def loss_fn(params, frozen, mb, old_logp, first_update):
        """(loss, (metrics, log-probs [b, A] without gradient)); ``old_logp`` is ignored in the
        first update, whose own log-probs are the snapshot's."""
        logits, head_lp = forward(params["policy"], frozen["policy"], mb)
        w = mb["weight"]
        logp = ppo_lib.token_logprobs(logits, mb["action_targets"])
        sg_logp = jax.lax.stop_gradient(logp)
        if cfg.algo == "sft":
            loss, m = sft_loss(logp, w)
            sg_logits = jax.lax.stop_gradient(logits)
            m["entropy"] = (w * ppo_lib.token_entropy(sg_logits)).sum()
            kl_ba = kl_tokens(sg_logits, sg_logp, mb)
            m["kl"] = (w * kl_ba).sum()
        else:
            old_logp = jnp.where(first_update, sg_logp, old_logp)
            if pcfg.surrogate == "ppo_ref":
                old_logp = mb["ref_logp"]
            entropy = ppo_lib.token_entropy(logits)
            if pcfg.entropy_coef == 0.0:
                entropy = jax.lax.stop_gradient(entropy)  # a metric only: no backward pass through it
            kl_ba = kl_tokens(logits, logp, mb)
            loss, m = ppo_lib.ppo_loss(logp, old_logp, mb["adv"], w, kl_ba, pcfg,
                                       action_span_ba=mb["action_span"], num_spans=mb["span_mask"].shape[-1],
                                       entropy_ba=entropy)
            if use_critic:
                vl = ppo_lib.value_loss(critic_value(params["critic"], frozen["critic"], mb), mb["span_return"],
                                        mb["span_weight"])
                loss = loss + pcfg.vf_coef * vl
                m["value_loss"] = vl
        if ccfg.loss != "off":
            closs, cm = cand_lib.candidate_loss(
                head_lp, mb["ref_header_logp"], mb["span_cand_score"], mb["span_cand_mask"], mb["cand_rarity"],
                mb["state_weight"], ccfg)
            loss = loss + ccfg.coef * closs
            m.update(cm)
        if headers:
            m.update(cand_lib.header_metrics(head_lp, mb["ref_header_logp"], mb["span_mask"], mb["live_weight"]))
        m.update(token_diagnostics(logp, mb["ref_logp"], kl_ba, mb["adv"], mb["action_mask"], mb["action_role"]))
        m["loss"] = jax.lax.stop_gradient(loss)
        return loss, (m, sg_logp)

    def step(state, frozen, ref, batch):
        batch = {k: batch[k] for k in BATCH_KEYS}
        batch["action_targets"] = jnp.take_along_axis(batch["targets"], batch["action_positions"], axis=1)
        trained = batch["action_mask"]
        if ccfg.loss != "off" and not ccfg.token_header:
            role = batch["action_role"]
            trained = trained * ((role != ROLE_HEADER) & (role != ROLE_FORMAT))
        batch["weight"] = ppo_lib.loss_weights(trained, batch["action_span"], batch["span_mask"],
                                               cfg.loss_normalization)
        span_mask = batch["span_mask"]
        batch["span_weight"] = span_mask / jnp.maximum(span_mask.sum(), 1.0)
        batch["live_weight"] = batch["span_weight"]
        judged = span_mask * (batch["span_cand_mask"].sum(-1) > 0)
        batch["state_weight"] = judged / jnp.maximum(judged.sum(), 1.0)
        micro = split_micro(batch, accum)
        prep = jax.lax.map(lambda mb: prepare(state["params"], frozen, ref, mb), micro)
        value = merge_micro({"v": prep["old_value"]})["v"] if use_critic else None
        # advantages under every algorithm: SFT uses them only to split its diagnostics by sign
        method = pcfg.advantage if pcfg.advantage != "state" and (use_critic or pcfg.advantage != "value") \
            else "running_norm"
        adv_bs, adv_stats = adv_lib.span_advantages(
            batch["span_return"], batch["span_kind"], batch["span_step"], span_mask, state["adv_stats"],
            method=method, groups=pcfg.norm_groups, decay=pcfg.norm_decay, eps=pcfg.adv_eps, value_bs=value)
        if pcfg.advantage == "state":
            per_state = cand_lib.state_advantage(batch["span_cand_score"], batch["span_cand_mask"],
                                                 batch["cand_rarity"], batch["span_selected"], ccfg, pcfg.adv_eps)
            adv_bs = jnp.where(judged > 0, per_state, adv_bs) * span_mask
        adv_ba = jnp.take_along_axis(adv_bs, batch["action_span"], axis=1) * batch["action_mask"]
        prep["adv"] = split_micro({"adv": adv_ba}, accum)["adv"]
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
            # the loss weights of the whole batch sum to 1: micro-batch gradients add up
            grads, (ms, logp) = jax.lax.scan(one_micro, zeros, (micro, old_logp))
            grad_norm = optax.global_norm(grads)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ms = combine_micro(ms)
            ms["grad_norm"] = grad_norm
            old_logp = jnp.where(first_update, logp, old_logp)  # the snapshot, for later updates
            return (params, opt_state, old_logp), ms

        no_old_logp = jnp.zeros(micro["action_mask"].shape, jnp.float32)
        (params, opt_state, _), ms = jax.lax.scan(
            one_update, (state["params"], state["opt_state"], no_old_logp), jnp.arange(epochs))
        # diagnostics describe the policy as this batch found it (the first update's pass)
        diag = {k: ms.pop(k)[0] for k in list(ms) if k.startswith("diag_")}
        pi_sum = ms.pop("header_pi_sum", None)
        metrics = jax.tree.map(lambda x: x.mean(0), ms)
        metrics.update(finish_diagnostics(diag))
        if pi_sum is not None:
            metrics["header_entropy_pooled"] = cand_lib.pooled_entropy(pi_sum[0])
            for k in ("header_entropy", "header_kl", "header_mass"):
                metrics[k] = ms[k][0]
        if cfg.algo == "ppo":
            metrics["clip_frac_last_epoch"] = ms["clip_frac"][-1]
            # what the updates bought on this batch: the surrogate's gain over the snapshot (0 with one epoch)
            metrics["surrogate_gain"] = ms["pg_loss"][0] - ms["pg_loss"][-1]
        live = span_mask > 0
        metrics["adv_mean"] = jnp.where(live, adv_bs, 0.0).sum() / jnp.maximum(live.sum(), 1)
        metrics["adv_std"] = jnp.sqrt(jnp.where(live, (adv_bs - metrics["adv_mean"]) ** 2, 0.0).sum()
                                      / jnp.maximum(live.sum(), 1))
        metrics["lr"] = schedule(state["step"] * epochs)
        metrics["records"] = span_mask.sum()
        metrics["judged_states"] = judged.sum()
        metrics["reward_mean"] = (batch["span_reward"] * span_mask).sum() / jnp.maximum(span_mask.sum(), 1.0)
        for kind, name in enumerate(KIND_NAMES):
            of_kind = span_mask * (batch["span_kind"] == kind)
            metrics[f"records_{name}"] = of_kind.sum()
            metrics[f"reward_sum_{name}"] = (batch["span_reward"] * of_kind).sum()
        metrics["action_tokens"] = batch["action_mask"].sum()
        metrics["tokens"] = batch["attention_mask"].sum()
        new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
                     "adv_stats": adv_stats}
        return new_state, metrics

    return step


def init_state(params: Any, optimizer: optax.GradientTransformation) -> dict[str, Any]:
    return {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.zeros((), jnp.int32),
        "adv_stats": adv_lib.init_stats(),
    }
