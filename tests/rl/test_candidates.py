"""The candidate objective: header log-probs in one pass equal separate passes, and the losses'
gradients equal hand-computed and finite-difference ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from spark_jax.model.config import tiny
from spark_jax.model.llama import Llama
from spark_jax.rl import candidates as C
from spark_jax.rl.ppo import token_logprobs

HEADERS = [[7, 8, 9], [7, 10], [11]]  # three "actions" with headers of 3, 2 and 1 tokens


def _header_arrays(rows):
    ids = np.concatenate([np.asarray(h) for h in HEADERS])
    action = np.concatenate([np.full(len(h), a) for a, h in enumerate(HEADERS)])
    offset = np.concatenate([np.arange(len(h)) for h in HEADERS])
    tile = lambda x: jnp.asarray(np.broadcast_to(x, (rows, len(x))))  # noqa: E731
    return tile(ids).astype(jnp.int32), tile(action).astype(jnp.int32), tile(offset).astype(jnp.int32), \
        jnp.ones((rows, len(ids)), jnp.float32)


def test_header_logprobs_in_one_pass_equal_one_pass_per_state_and_header():
    model = Llama(tiny(), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    t = 24
    ids = jnp.asarray(rng.integers(3, 200, (2, t)), jnp.int32)
    attn = jnp.asarray(np.r_[np.ones(20), np.zeros(4)][None].repeat(2, 0), jnp.int32)
    span_start = jnp.asarray([[5, 12, 0], [3, 9, 18]], jnp.int32)
    span_mask = jnp.asarray([[1, 1, 0], [1, 1, 1]], jnp.float32)
    h_ids, h_act, h_off, h_mask = _header_arrays(2)
    ext, pos, valid, allowed, query = C.extended_inputs(ids, attn, span_start, span_mask, h_ids, h_off, h_mask)
    assert ext.shape[1] % C.PAD_TO == 0
    hidden, _ = model.hidden_states(ext, pos, valid, allowed_btt=allowed)
    logits = model.project(jnp.take_along_axis(hidden, query[..., None], axis=1))
    lp = token_logprobs(logits, jnp.tile(h_ids, (1, 3)))
    got = C.header_logprobs(lp, h_act, h_mask, 3, len(HEADERS))
    # the main row's own logits are those of a plain causal pass
    plain, _ = model(ids, None, attn)
    full = model.project(hidden[:, :t])
    np.testing.assert_allclose(np.asarray(full * attn[..., None]), np.asarray(plain * attn[..., None]),
                               rtol=1e-5, atol=1e-5)
    for b in range(2):
        for s in range(3):
            if not span_mask[b, s]:
                continue
            for a, head in enumerate(HEADERS):
                seq = jnp.asarray([list(np.asarray(ids[b, :int(span_start[b, s]) + 1])) + head], jnp.int32)
                lg, _ = model(seq)
                n = seq.shape[1]
                want = token_logprobs(lg[:, n - len(head) - 1:n - 1], seq[:, n - len(head):]).sum()
                np.testing.assert_allclose(float(got[b, s, a]), float(want), rtol=1e-5, atol=1e-5,
                                           err_msg=f"row {b} span {s} header {a}")


def _case():
    rng = np.random.default_rng(1)
    logp = jnp.asarray(-rng.uniform(1, 6, (2, 2, 4)), jnp.float32)
    ref = logp + jnp.asarray(rng.normal(0, 0.3, (2, 2, 4)), jnp.float32)
    score = jnp.asarray([[[8, 3, 9, 0], [2, 7, 6, 0]], [[1, 2, 3, 0], [0, 0, 0, 0]]], jnp.float32)
    judged = jnp.asarray([[[1, 1, 1, 0], [1, 1, 1, 0]], [[1, 1, 1, 0], [0, 0, 0, 0]]], jnp.float32)
    rarity = jnp.asarray([[0.5, 0.9, 0.2, 0.0]] * 2, jnp.float32)
    w = jnp.asarray([[1, 1], [1, 0]], jnp.float32) / 3.0
    return logp, ref, score, judged, rarity, w


def test_xent_target_is_softmax_over_viable_candidates_or_all_judged_when_none_is():
    _, _, score, judged, rarity, _ = _case()
    cfg = C.CandidateConfig(loss="xent", tau=0.5, threshold=6.0)
    r = C.candidate_rewards(score, rarity, cfg)
    q = C.xent_target(r, score, judged, cfg)
    # state (0, 0): candidates 0 and 2 are viable (8, 9 >= 6)
    e = np.exp(np.asarray([r[0, 0, 0], r[0, 0, 2]]) / 0.5)
    np.testing.assert_allclose(np.asarray(q[0, 0]), [e[0] / e.sum(), 0, e[1] / e.sum(), 0], rtol=1e-6)
    # state (1, 0): nothing viable, so all three judged candidates
    e = np.exp(np.asarray(r[1, 0, :3]) / 0.5)
    np.testing.assert_allclose(np.asarray(q[1, 0, :3]), e / e.sum(), rtol=1e-6)
    assert float(q[1, 0, 3]) == 0.0 and float(q[1, 1].sum()) == 0.0  # unjudged: no target


def test_xent_gradient_is_minus_the_weighted_target():
    logp, ref, score, judged, rarity, w = _case()
    cfg = C.CandidateConfig(loss="xent", tau=0.5)
    g = jax.grad(lambda x: C.candidate_loss(x, ref, score, judged, rarity, w, cfg)[0])(logp)
    q = C.xent_target(C.candidate_rewards(score, rarity, cfg), score, judged, cfg)
    np.testing.assert_allclose(np.asarray(g), np.asarray(-w[..., None] * q), rtol=1e-6, atol=1e-7)


def test_pg_gradient_matches_hand_formula_and_finite_differences():
    logp, ref, score, judged, rarity, w = _case()
    cfg = C.CandidateConfig(loss="pg", kl_coef=0.3)
    f = lambda x: C.candidate_loss(x, ref, score, judged, rarity, w, cfg)[0]  # noqa: E731
    g = np.asarray(jax.grad(f)(logp))
    # hand: d/dl_a [-sum pi (R - b)] = -pi_a (A_a - sum pi A); d/dl_a KL(pi||ref) = pi_a (k_a - KL),
    # k_a = log pi_a - log ref_a; unjudged headers have A = 0 (R = b)
    pi = np.asarray(jax.nn.softmax(logp, -1), np.float64)
    r = np.asarray(C.candidate_rewards(score, rarity, cfg), np.float64)
    jm = np.asarray(judged) > 0
    b = np.where(jm, r, 0).sum(-1, keepdims=True) / np.maximum(jm.sum(-1, keepdims=True), 1)
    adv = np.where(jm, r, b) - b
    k = np.log(pi) - np.asarray(jax.nn.log_softmax(ref, -1), np.float64)
    kl = (pi * k).sum(-1, keepdims=True)
    hand = np.asarray(w)[..., None] * (-pi * (adv - (pi * adv).sum(-1, keepdims=True)) + 0.3 * pi * (k - kl))
    np.testing.assert_allclose(g, hand, rtol=1e-4, atol=1e-6)
    eps = 1e-2
    x = np.asarray(logp, np.float64)
    for idx in [(0, 0, 0), (0, 0, 3), (0, 1, 1), (1, 0, 2)]:
        up, dn = x.copy(), x.copy()
        up[idx] += eps
        dn[idx] -= eps
        fd = (float(f(jnp.asarray(up, jnp.float32))) - float(f(jnp.asarray(dn, jnp.float32)))) / (2 * eps)
        assert fd == pytest.approx(g[idx], abs=2e-3), idx


def test_header_metrics_entropy_and_pooled_entropy():
    logp, ref, _, _, _, _ = _case()
    live = jnp.asarray([[1, 1], [1, 1]], jnp.float32) / 4
    m = C.header_metrics(logp, logp, jnp.ones((2, 2)), live)
    pi = jax.nn.softmax(logp, -1)
    ent = -(pi * jnp.log(pi)).sum(-1).mean()
    assert float(m["header_entropy"]) == pytest.approx(float(ent), rel=1e-5)
    assert float(m["header_kl"]) == pytest.approx(0.0, abs=1e-6)
    mean_pi = pi.mean((0, 1))
    assert float(C.pooled_entropy(m["header_pi_sum"])) == pytest.approx(float(-(mean_pi * jnp.log(mean_pi)).sum()),
                                                                       rel=1e-5)


def test_config_is_validated():
    with pytest.raises(ValueError, match="candidates.loss"):
        C.CandidateConfig(loss="kl")
    with pytest.raises(ValueError, match="tau"):
        C.CandidateConfig(tau=0.0)


def test_state_advantage_standardises_the_selected_reward_over_its_state():
    _, _, score, judged, rarity, _ = _case()
    cfg = C.CandidateConfig()
    sel = jnp.asarray([[2, 0], [1, -1]], jnp.int32)
    adv = np.asarray(C.state_advantage(score, judged, rarity, sel, cfg, 1e-6))
    r = np.asarray(C.candidate_rewards(score, rarity, cfg))
    for (b, s) in [(0, 0), (0, 1), (1, 0)]:
        vals = r[b, s, :3]
        assert adv[b, s] == pytest.approx((vals[int(sel[b, s])] - vals.mean()) / (vals.std() + 1e-6), rel=1e-5)
    assert adv[1, 1] == 0.0  # unjudged, no selection
