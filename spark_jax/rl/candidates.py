"""The objective over every judged candidate: the policy's distribution over the ten action
headers at each state, trained against the judge's scores of all nine candidates.

Shapes: B rows, T row tokens, S spans (states) per row, N = 10 actions (``packing.ACTIONS``),
H header tokens (the ten headers end to end, ``pipeline.header_arrays``), V vocabulary.

The header log-probs are those score mode computes (``eval.agent.score_actions``): the summed
log-probability of ``Action: <name>\\nInput:`` after the state. They come from the same forward
pass as the token-level loss: the S x H header tokens are appended to the row, each header
reading its state's tokens (up to ``span_start``) and its own earlier tokens only
(``extended_inputs``), so each state is prefilled once.

Rewards R(s, a) = quality * score(s, a) / 10 + rarity * rarity(a), with the judge's 0-10 score
and the run's rarity of the action (``packing.run_rarity``). Losses (see docs/training.md):

- ``xent``: -sum_a q(a|s) log p(h_a | s), q proportional to exp(R(s, a) / tau) over the viable
  candidates (score >= threshold; all judged ones where none is): SFT towards the judge's
  distribution, on sequence log-probs, so the shared format tokens are trained too;
- ``pg``: -sum_a pi(a|s) (R(s, a) - b(s)) + kl_coef * KL(pi(.|s) || pi_ref(.|s)), pi the softmax
  of the ten header log-probs, b(s) the mean of R over the judged candidates (a constant: it
  changes the loss's value, not its gradient, since sum_a pi(a|s) = 1); unjudged headers
  (answer) get R = b(s), advantage 0.

Both are averaged over the judged states of the global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

LOSSES = ("off", "xent", "pg")
PAD_TO = 8  # the appended header block is padded to a multiple of this (attention blocks divide it)


@dataclasses.dataclass(frozen=True)
class CandidateConfig:
    """The candidate objective (docs/training.md).

    loss           "off", "xent" (cross-entropy to exp(R / tau) over viable candidates) or "pg"
                   (exact expected advantage over the ten headers, KL to the reference)
    coef           weight of this loss added to the token-level loss
    tau            temperature of the xent target, in reward units
    quality        weight of score / 10 in R(s, a)
    rarity         weight of the run's rarity of a in R(s, a)
    threshold      judge score (0-10) at or above which a candidate is viable (xent target)
    kl_coef        pg only: weight of the exact ten-way KL to the reference's header distribution
    token_header   whether the token-level loss also covers the selected action's header tokens
                   (false: it trains the input text and end of turn only)
    metrics        compute the header log-probs for the diagnostics even with loss "off" (each
                   row grows by its header block, which the memory planner counts)
    """

    loss: Literal["off", "xent", "pg"] = "off"
    coef: float = 1.0
    tau: float = 0.1
    quality: float = 1.0
    rarity: float = 0.5
    threshold: float = 6.0
    kl_coef: float = 0.1
    token_header: bool = True
    metrics: bool = False

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"candidates.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.coef < 0 or self.kl_coef < 0:
            raise ValueError("candidates.coef and candidates.kl_coef must be >= 0")
        if self.tau <= 0:
            raise ValueError(f"candidates.tau must be > 0, got {self.tau}")
        if not 0 <= self.threshold <= 10:
            raise ValueError(f"candidates.threshold must lie in the judge's 0-10 scale, got {self.threshold}")

    @property
    def headers_needed(self) -> bool:
        return self.loss != "off" or self.metrics


def extended_inputs(input_ids_bt, attention_bt, span_start_bs, span_mask_bs, header_ids_bh, header_offset_bh,
                    header_mask_bh):
    """The row with every state's ten headers appended, and where the header tokens are scored.

    Returns ``ids`` [B, T'], ``positions`` [B, T'], ``valid`` [B, T'], ``allowed`` bool [B, T', T']
    (T' = T + S * H rounded up to ``PAD_TO``), and ``query`` [B, S * H], the position whose
    hidden state predicts each header token (its state's last token for a header's first token,
    the previous header token otherwise). Main-row tokens attend causally as before.
    """
    b, t = input_ids_bt.shape
    s = span_start_bs.shape[1]
    h = header_ids_bh.shape[1]
    e = s * h
    pad = -(t + e) % PAD_TO
    main_pos = jnp.maximum(jnp.cumsum(attention_bt.astype(jnp.int32), axis=-1) - 1, 0)
    # header token (span j, flat index k) sits at T + j * H + k
    start_bs1 = span_start_bs[:, :, None]
    off = header_offset_bh[:, None, :]
    head_pos = jnp.take_along_axis(main_pos, span_start_bs, axis=1)[:, :, None] + 1 + off  # [B, S, H]
    head_valid = (span_mask_bs[:, :, None] > 0) & (header_mask_bh[:, None, :] > 0)
    head_ids = jnp.broadcast_to(header_ids_bh[:, None, :], (b, s, h))
    zeros = jnp.zeros((b, pad), jnp.int32)
    ids = jnp.concatenate([input_ids_bt, head_ids.reshape(b, e), zeros], axis=1)
    positions = jnp.concatenate([main_pos, head_pos.reshape(b, e), zeros], axis=1).astype(jnp.int32)
    valid = jnp.concatenate([attention_bt > 0, head_valid.reshape(b, e), zeros > 0], axis=1)
    # segments: 0 main row, then one per (span, header token's action start); a header token
    # reads main tokens up to its state's end and the earlier tokens of its own header
    header_start = jnp.arange(h)[None, :] - header_offset_bh  # flat index where each token's header begins
    seg_head = 1 + jnp.arange(s)[None, :, None] * h + header_start[:, None, :]  # [B, S, H]
    seg = jnp.concatenate([jnp.zeros((b, t), jnp.int32), seg_head.reshape(b, e).astype(jnp.int32),
                           jnp.full((b, pad), -1, jnp.int32)], axis=1)
    idx = jnp.arange(t + e + pad)
    limit = jnp.concatenate([jnp.broadcast_to(idx[:t], (b, t)),
                             jnp.broadcast_to(start_bs1, (b, s, h)).reshape(b, e),
                             jnp.full((b, pad), -1, jnp.int32)], axis=1)
    main_key = (seg == 0)[:, None, :] & (idx[None, None, :] <= limit[:, :, None])
    own = (seg[:, None, :] == seg[:, :, None]) & (seg[:, :, None] > 0)
    allowed = main_key | own
    first = header_offset_bh == 0
    block = t + jnp.arange(s)[None, :, None] * h + jnp.arange(h)[None, None, :]  # [1, S, H]
    query = jnp.where(first[:, None, :], start_bs1, block - 1).reshape(b, e)
    return ids, positions, valid, allowed, query


def header_logprobs(token_logp_be: jax.Array, header_action_bh: jax.Array, header_mask_bh: jax.Array,
                    spans: int, actions: int) -> jax.Array:
    """Summed log-prob of each action's header at each state [B, S, N] from per-token log-probs
    [B, S * H] (the order of ``extended_inputs``' ``query``)."""
    b, h = header_action_bh.shape
    lp = token_logp_be.reshape(b, spans, h) * header_mask_bh[:, None, :]
    onehot = jax.nn.one_hot(header_action_bh, actions, dtype=jnp.float32)  # [B, H, N]
    return jnp.einsum("bsh,bhn->bsn", lp, onehot)


def candidate_rewards(score_bsn, rarity_bn, cfg: CandidateConfig) -> jax.Array:
    """R(s, a) [B, S, N] = quality * score / 10 + rarity * rarity(a)."""
    return cfg.quality * score_bsn / 10.0 + cfg.rarity * rarity_bn[:, None, :]


def state_advantage(score_bsn, judged_bsn, rarity_bn, selected_bs, cfg: CandidateConfig, eps: float) -> jax.Array:
    """(R(s, a_t) - mean_a R(s, a)) / (std_a R(s, a) + eps) over the judged candidates of each
    state [B, S]: the selected action against the others at the same state (0 where unjudged)."""
    reward = candidate_rewards(score_bsn, rarity_bn, cfg)
    judged = judged_bsn > 0
    n = jnp.maximum(judged.sum(-1), 1)
    mean = jnp.where(judged, reward, 0.0).sum(-1) / n
    var = jnp.where(judged, (reward - mean[..., None]) ** 2, 0.0).sum(-1) / n
    sel = jnp.take_along_axis(reward, jnp.maximum(selected_bs, 0)[..., None], axis=-1)[..., 0]
    ok = judged.any(-1) & (selected_bs >= 0)
    return jnp.where(ok, (sel - mean) / (jnp.sqrt(var) + eps), 0.0)


def xent_target(reward_bsn, score_bsn, judged_bsn, cfg: CandidateConfig) -> jax.Array:
    """q(a|s) [B, S, N] proportional to exp(R / tau) over the viable candidates (all judged ones
    at a state with none viable); 0 at unjudged states."""
    judged = judged_bsn > 0
    viable = judged & (score_bsn >= cfg.threshold)
    support = jnp.where(viable.any(-1, keepdims=True), viable, judged)
    logits = jnp.where(support, reward_bsn / cfg.tau, -jnp.inf)
    q = jax.nn.softmax(jnp.where(support.any(-1, keepdims=True), logits, 0.0), axis=-1)
    return jnp.where(support, q, 0.0)


def candidate_loss(header_logp_bsn, ref_header_logp_bsn, score_bsn, judged_bsn, rarity_bn, state_weight_bs,
                   cfg: CandidateConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The candidate loss as a ``state_weight_bs`` sum (weights 1 / judged states of the global
    batch, 0 elsewhere), and its metrics (weighted sums too)."""
    w = state_weight_bs.astype(jnp.float32)
    reward = candidate_rewards(score_bsn, rarity_bn, cfg)
    judged = judged_bsn > 0
    logpi = jax.nn.log_softmax(header_logp_bsn, axis=-1)
    pi = jnp.exp(logpi)
    sg = jax.lax.stop_gradient
    m = {}
    if cfg.loss == "xent":
        q = xent_target(reward, score_bsn, judged_bsn, cfg)
        per_state = -(q * header_logp_bsn).sum(-1)
    elif cfg.loss == "pg":
        base = (jnp.where(judged, reward, 0.0).sum(-1, keepdims=True)
                / jnp.maximum(judged.sum(-1, keepdims=True), 1))
        adv = jnp.where(judged, reward, base) - base
        ref_logpi = sg(jax.nn.log_softmax(ref_header_logp_bsn, axis=-1))
        kl = (pi * (logpi - ref_logpi)).sum(-1)
        per_state = -(pi * adv).sum(-1) + cfg.kl_coef * kl
        m["cand_kl"] = sg((w * kl).sum())
    else:
        raise ValueError(f"candidate loss {cfg.loss!r} has no formula (use xent or pg)")
    loss = (w * per_state).sum()
    m["cand_loss"] = sg(loss)
    best = jnp.where(judged, reward, -jnp.inf).max(-1, keepdims=True)
    m["cand_expected_regret"] = sg((w * (pi * jnp.where(judged, best - reward, 0.0)).sum(-1)).sum())
    return loss, m


def header_metrics(header_logp_bsn, ref_header_logp_bsn, span_mask_bs, live_weight_bs) -> dict[str, jax.Array]:
    """Weighted sums over live states (weights ``live_weight_bs`` sum to 1 over the global batch):
    per-state entropy of the ten-way header distribution, its KL to the reference's, the
    summed probability of the ten headers (how much mass the format gets), and the mean
    distribution ``header_pi_sum`` [N] (its entropy, the pooled entropy, is taken after summing)."""
    sg = jax.lax.stop_gradient
    lp = sg(header_logp_bsn)
    logpi = jax.nn.log_softmax(lp, axis=-1)
    pi = jnp.exp(logpi)
    ref_logpi = jax.nn.log_softmax(sg(ref_header_logp_bsn), axis=-1)
    w = live_weight_bs.astype(jnp.float32)
    return {
        "header_entropy": (w * -(pi * logpi).sum(-1)).sum(),
        "header_kl": (w * (pi * (logpi - ref_logpi)).sum(-1)).sum(),
        "header_mass": (w * jnp.exp(jax.nn.logsumexp(lp, axis=-1))).sum(),
        "header_pi_sum": (w[..., None] * pi).sum((0, 1)),
    }


def pooled_entropy(pi_sum_n: jax.Array) -> jax.Array:
    """Entropy of the batch's mean header distribution (from ``header_pi_sum``)."""
    p = pi_sum_n / jnp.maximum(pi_sum_n.sum(), 1e-12)
    return -(p * jnp.log(jnp.maximum(p, 1e-30))).sum()
