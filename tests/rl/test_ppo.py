"""PPO and SFT losses against the PyTorch reference: values and d(loss)/d(logits), float32, 1e-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from spark_jax.rl import ppo as P
from spark_jax.rl.sft import sft_loss
from tests.rl import torch_reference as R

TOL = 1e-5


def _inputs(seed=0, b=5, a=12, v=11, s=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, a, v)).astype(np.float32)
    targets = rng.integers(0, v, size=(b, a)).astype(np.int32)
    mask = (rng.random((b, a)) < 0.8).astype(np.float32)
    mask[0, :] = 0.0  # a row without action tokens must not break anything
    span = np.sort(rng.integers(0, s, size=(b, a)), axis=1).astype(np.int32)  # spans in order, as packed
    span_mask = np.zeros((b, s), np.float32)
    for i in range(b):
        span_mask[i, np.unique(span[i][mask[i] > 0])] = 1.0
    ref_logprobs = np.asarray(jax.nn.log_softmax(logits + 0.5 * rng.normal(size=logits.shape), -1), np.float32)
    logp = np.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    old = (logp + 0.8 * rng.normal(size=(b, a))).astype(np.float32)  # ratios well outside [0.8, 1.2]
    adv = rng.normal(size=(b, s)).astype(np.float32)
    adv_tok = np.take_along_axis(adv, span, 1) * mask
    return logits, targets, old, ref_logprobs, adv_tok, mask, span, span_mask


@pytest.mark.parametrize("normalization", ["tokens", "records"])
def test_loss_weights_match_torch_and_sum_to_one(normalization):
    _, _, _, _, _, mask, span, span_mask = _inputs()
    w = P.loss_weights(jnp.asarray(mask), jnp.asarray(span), jnp.asarray(span_mask), normalization)
    want = R.weights(torch.tensor(mask), torch.tensor(span), torch.tensor(span_mask), normalization)
    np.testing.assert_allclose(np.asarray(w), want.numpy(), rtol=TOL, atol=1e-7)
    assert abs(float(w.sum()) - 1.0) < 1e-6
    if normalization == "records":  # every span weighs 1 / spans, however long it is
        per_span = np.asarray(P.span_sum(w, jnp.asarray(span), jnp.asarray(mask), span_mask.shape[1]))
        np.testing.assert_allclose(per_span[span_mask > 0], 1.0 / span_mask.sum(), rtol=1e-5)


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("kl_estimator", ["full", "k3"])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
@pytest.mark.parametrize("normalization", ["tokens", "records"])
def test_ppo_loss_and_grad_match_torch(ratio_level, kl_estimator, entropy_coef, normalization):
    logits, targets, old, ref_lp, adv, mask, span, span_mask = _inputs()
    cfg = P.PPOConfig(clip_eps=0.2, kl_coef=0.05, kl_estimator=kl_estimator, entropy_coef=entropy_coef,
                      ratio_level=ratio_level, surrogate="ppo")
    w = P.loss_weights(jnp.asarray(mask), jnp.asarray(span), jnp.asarray(span_mask), normalization)
    ref_logp = np.take_along_axis(ref_lp, targets[..., None], -1)[..., 0]

    def f(lg):
        logp = P.token_logprobs(lg, targets)
        kl = P.full_kl(lg, ref_lp) if kl_estimator == "full" else P.k3_kl(logp, ref_logp)
        return P.ppo_loss(logp, old, adv, w, kl, cfg, action_span_ba=jnp.asarray(span), num_spans=3,
                          entropy_ba=P.token_entropy(lg))

    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logits))
    lt = torch.tensor(logits, requires_grad=True)
    tw = R.weights(torch.tensor(mask), torch.tensor(span), torch.tensor(span_mask), normalization)
    ref_loss = R.ppo_loss(lt, torch.tensor(targets), torch.tensor(old), torch.tensor(ref_lp), torch.tensor(adv),
                          tw, torch.tensor(span), 3, clip_eps=0.2, kl_coef=0.05, kl_estimator=kl_estimator,
                          entropy_coef=entropy_coef, ratio_level=ratio_level)
    ref_loss.backward()
    np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.asarray(grad), lt.grad.numpy(), rtol=TOL, atol=TOL)
    assert 0.0 < float(metrics["clip_frac"]) < 1.0  # these inputs clip some ratios, not all
    assert float(metrics["ratio_min"]) <= float(metrics["ratio_mean"]) <= float(metrics["ratio_max"])


def test_sft_loss_and_grad_match_torch():
    logits, targets, _, _, _, mask, span, span_mask = _inputs(seed=1)
    w = P.loss_weights(jnp.asarray(mask), jnp.asarray(span), jnp.asarray(span_mask), "tokens")
    (loss, _), grad = jax.value_and_grad(lambda lg: sft_loss(P.token_logprobs(lg, targets), w), has_aux=True)(
        jnp.asarray(logits))
    lt = torch.tensor(logits, requires_grad=True)
    ref = R.sft_loss(lt, torch.tensor(targets), torch.tensor(np.asarray(w)))
    ref.backward()
    np.testing.assert_allclose(float(loss), ref.item(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.asarray(grad), lt.grad.numpy(), rtol=TOL, atol=TOL)


def test_first_epoch_has_unit_ratio_and_zero_kl_to_itself():
    logits, targets, _, _, adv, mask, span, span_mask = _inputs(seed=2)
    lg = jnp.asarray(logits)
    logp = P.token_logprobs(lg, targets)
    w = P.loss_weights(jnp.asarray(mask), jnp.asarray(span), jnp.asarray(span_mask), "tokens")
    kl = P.full_kl(lg, jax.nn.log_softmax(lg, -1))
    _, m = P.ppo_loss(logp, logp, adv, w, kl, P.PPOConfig(), action_span_ba=jnp.asarray(span), num_spans=3)
    assert float(m["clip_frac"]) == 0.0
    assert abs(float(m["kl"])) < 1e-6 and abs(float(m["ratio_mean"]) - 1) < 1e-6


def test_full_kl_is_the_exact_kl_and_k3_is_nonnegative():
    p = jnp.log(jnp.array([[0.7, 0.2, 0.1]]))
    q = jnp.log(jnp.array([[0.2, 0.5, 0.3]]))
    exact = float((jnp.exp(p) * (p - q)).sum())
    np.testing.assert_allclose(float(P.full_kl(p + 3.0, q)[0]), exact, rtol=1e-6)  # logits, not log-probs
    assert float(P.full_kl(p, p)[0]) == pytest.approx(0.0, abs=1e-7)
    a, b = jnp.array([0.0, -1.0, -3.0]), jnp.array([-2.0, -1.0, 0.0])
    assert (P.k3_kl(a, b) >= 0).all()


def test_full_kl_gradient_is_not_plain_unlikelihood():
    """The old k1 term's gradient pushed every data token's log-prob down; the exact KL's
    gradient is zero where the policy equals the reference, whatever the data token."""
    ref = jax.nn.log_softmax(jnp.array([[1.0, 0.0, -1.0]]), -1)
    g = jax.grad(lambda lg: P.full_kl(lg, ref).sum())(ref)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-7)


def test_config_rejects_bad_and_removed_values():
    with pytest.raises(ValueError, match="clip_eps"):
        P.PPOConfig(clip_eps=1.5)
    with pytest.raises(ValueError, match="kl_estimator"):
        P.PPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match="k1 was removed.*'full'"):
        P.PPOConfig(kl_estimator="k1")
    with pytest.raises(ValueError, match="batch_norm was removed.*running_norm"):
        P.PPOConfig(advantage="batch_norm")
    with pytest.raises(ValueError, match="gamma"):
        P.PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="norm_groups"):
        P.PPOConfig(norm_groups="batch")


def test_split_micro_is_strided_and_merge_inverts_it():
    from spark_jax.rl.steps import merge_micro, split_micro

    x = np.arange(12).reshape(6, 2)
    micro = split_micro({"x": x}, 3)["x"]
    assert micro.shape == (3, 2, 2)
    np.testing.assert_array_equal(micro[0], x[[0, 3]])  # rows 0, 3: every device block contributes
    np.testing.assert_array_equal(merge_micro({"x": micro})["x"], x)


@pytest.mark.parametrize("surrogate", ["awr", "filtered"])
def test_regression_surrogates_are_weighted_nll_with_nonnegative_weights(surrogate):
    _, _, _, _, adv, mask, span, span_mask = _inputs()
    rng = np.random.default_rng(3)
    logp = jnp.asarray(-rng.uniform(0.1, 5, mask.shape), jnp.float32)
    adv = jnp.asarray(adv * 3.0)  # some advantages far enough out for AWR's weight clip
    cfg = P.PPOConfig(surrogate=surrogate, kl_coef=0.0, awr_beta=0.5, awr_max_weight=5.0)
    w = P.loss_weights(jnp.asarray(mask), jnp.asarray(span), jnp.asarray(span_mask), "tokens")
    f = lambda lp: P.ppo_loss(lp, lp, adv, w, jnp.zeros_like(lp), cfg)[0]  # noqa: E731
    g = np.asarray(jax.grad(f)(logp))
    a = np.asarray(adv)
    weight = np.minimum(np.exp(a / 0.5), 5.0) if surrogate == "awr" else np.maximum(a, 0.0)
    np.testing.assert_allclose(g, -np.asarray(w) * weight, rtol=1e-6, atol=1e-8)
    assert (g <= 0).all()  # no token is pushed down, whatever its advantage
    if surrogate == "awr":
        assert (weight[np.asarray(w) > 0] == 5.0).any()  # the clip is exercised


def test_ppo_ref_bounds_the_first_epoch_where_snapshot_ppo_does_not():
    """First epoch: snapshot PPO's ratio is 1, so a negative-advantage token is pushed down
    however far it already is from the reference; with the ratio to the reference, a token
    already below (1 - eps) of the reference's probability gets no push."""
    rng = np.random.default_rng(4)
    shape = (2, 6)
    ref_logp = jnp.asarray(-rng.uniform(0.5, 3, shape), jnp.float32)
    logp = ref_logp + jnp.asarray([[-1.0, -0.05, 0.5, -1.0, 0.05, -0.5]] * 2, jnp.float32)
    adv = jnp.asarray([[-1.0] * 6, [1.0] * 6], jnp.float32)
    w = jnp.full(shape, 1.0 / 12)
    zero_kl = jnp.zeros(shape)
    snap = P.PPOConfig(surrogate="ppo", kl_coef=0.0)
    g_snap = np.asarray(jax.grad(lambda lp: P.ppo_loss(lp, jax.lax.stop_gradient(lp), adv, w, zero_kl, snap)[0])(logp))
    np.testing.assert_allclose(g_snap, -np.asarray(adv * w), rtol=1e-6)  # unbounded: every token pushed
    ref = P.PPOConfig(surrogate="ppo_ref", kl_coef=0.0)
    g_ref = np.asarray(jax.grad(lambda lp: P.ppo_loss(lp, ref_logp, adv, w, zero_kl, ref)[0])(logp))
    ratio = np.exp(np.asarray(logp - ref_logp))
    bounded = ((np.asarray(adv) < 0) & (ratio < 0.8)) | ((np.asarray(adv) > 0) & (ratio > 1.2))
    assert bounded.any() and (~bounded).any()
    assert (g_ref[bounded] == 0).all()
    np.testing.assert_allclose(g_ref[~bounded], (-np.asarray(adv * w) * ratio)[~bounded], rtol=1e-5)


def test_surrogate_config_is_validated():
    with pytest.raises(ValueError, match="ppo.surrogate"):
        P.PPOConfig(surrogate="dpo")
    with pytest.raises(ValueError, match="awr_beta"):
        P.PPOConfig(awr_beta=0.0)
