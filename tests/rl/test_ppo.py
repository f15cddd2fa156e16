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


def _inputs(seed=0, b=3, t=7, v=11):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, t, v)).astype(np.float32)
    targets = rng.integers(0, v, size=(b, t)).astype(np.int32)
    mask = (rng.random((b, t)) < 0.6).astype(np.float32)
    mask[0, :] = 0.0  # a row without action tokens must not break anything
    logp = np.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
    old = (logp + 0.3 * rng.normal(size=(b, t))).astype(np.float32)  # ratios well outside [0.8, 1.2]
    ref = (logp + 0.2 * rng.normal(size=(b, t))).astype(np.float32)
    adv = rng.normal(size=(b,)).astype(np.float32)
    return logits, targets, old, ref, adv, mask


@pytest.mark.parametrize("ratio_level", ["token", "sequence"])
@pytest.mark.parametrize("kl_estimator", ["k1", "k3"])
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_ppo_loss_and_grad_match_torch(ratio_level, kl_estimator, entropy_coef):
    logits, targets, old, ref, adv, mask = _inputs()
    cfg = P.PPOConfig(clip_eps=0.2, kl_coef=0.05, kl_estimator=kl_estimator, entropy_coef=entropy_coef,
                      ratio_level=ratio_level)

    def f(lg):
        return P.ppo_loss_from_logits(lg, targets, old, ref, adv, mask, cfg)

    (loss, metrics), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logits))
    lt = torch.tensor(logits, requires_grad=True)
    ref_loss = R.ppo_loss(lt, torch.tensor(targets), torch.tensor(old), torch.tensor(ref), torch.tensor(adv),
                          torch.tensor(mask), clip_eps=0.2, kl_coef=0.05, kl_estimator=kl_estimator,
                          entropy_coef=entropy_coef, ratio_level=ratio_level)
    ref_loss.backward()
    np.testing.assert_allclose(float(loss), ref_loss.item(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.asarray(grad), lt.grad.numpy(), rtol=TOL, atol=TOL)
    assert 0.0 < float(metrics["clip_frac"]) < 1.0  # these inputs clip some ratios, not all
    assert float(metrics["ratio_min"]) <= float(metrics["ratio_mean"]) <= float(metrics["ratio_max"])


def test_sft_loss_and_grad_match_torch():
    logits, targets, _, _, _, mask = _inputs(seed=1)
    (loss, _), grad = jax.value_and_grad(lambda lg: sft_loss(lg, targets, mask), has_aux=True)(jnp.asarray(logits))
    lt = torch.tensor(logits, requires_grad=True)
    ref = R.sft_loss(lt, torch.tensor(targets), torch.tensor(mask))
    ref.backward()
    np.testing.assert_allclose(float(loss), ref.item(), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(np.asarray(grad), lt.grad.numpy(), rtol=TOL, atol=TOL)


def test_first_epoch_has_unit_ratio_and_zero_kl_to_itself():
    logits, targets, _, _, adv, mask = _inputs(seed=2)
    logp = P.token_logprobs(jnp.asarray(logits), targets)
    _, m = P.ppo_loss(logp, logp, logp, adv, mask, P.PPOConfig())
    assert float(m["clip_frac"]) == 0.0
    assert abs(float(m["kl"])) < 1e-7 and abs(float(m["ratio_mean"]) - 1) < 1e-6


def test_k3_is_nonnegative_and_k1_is_signed():
    a = jnp.array([0.0, -1.0, -3.0])
    b = jnp.array([-2.0, -1.0, 0.0])
    assert (P.kl_estimate(a, b, "k3") >= 0).all()
    assert float(P.kl_estimate(a, b, "k1")[2]) < 0


def test_advantages():
    r = jnp.array([1.0, 2.0, 3.0, 6.0])
    a = P.advantages_from_rewards(r, True)
    assert abs(float(a.mean())) < 1e-6 and abs(float(a.std()) - 1) < 1e-4
    np.testing.assert_allclose(P.advantages_from_rewards(r, False), r)
    np.testing.assert_allclose(P.advantages_from_values(r, jnp.ones(4)), r - 1)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="clip_eps"):
        P.PPOConfig(clip_eps=1.5)
    with pytest.raises(ValueError, match="kl_estimator"):
        P.PPOConfig(kl_estimator="k2")


def test_split_micro_is_strided_and_merge_inverts_it():
    import numpy as np

    from spark_jax.rl.steps import merge_micro, split_micro

    x = np.arange(12).reshape(6, 2)
    micro = split_micro({"x": x}, 3)["x"]
    assert micro.shape == (3, 2, 2)
    np.testing.assert_array_equal(micro[0], x[[0, 3]])  # rows 0, 3: every device block contributes
    np.testing.assert_array_equal(merge_micro({"x": micro})["x"], x)
