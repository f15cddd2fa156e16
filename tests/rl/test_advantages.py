"""Per-step advantages: running statistics per group, hand-computed cases, batch-size independence."""

import jax.numpy as jnp
import numpy as np
import pytest

from spark_jax.data.packing import discounted_returns
from spark_jax.rl import advantages as A

TOOL, COT, ANSWER = 0, 1, 2


def _adv(returns, kinds, steps, stats=None, method="running_norm", groups="step", decay=0.5, value=None):
    r = jnp.asarray(returns, jnp.float32)
    mask = jnp.ones_like(r)
    return A.span_advantages(r, jnp.asarray(kinds), jnp.asarray(steps), mask, stats or A.init_stats(),
                             method=method, groups=groups, decay=decay, eps=1e-6,
                             value_bs=None if value is None else jnp.asarray(value, jnp.float32))


def test_discounted_returns_by_hand():
    assert discounted_returns([1.0, 0.5, 1.0], 1.0) == [2.5, 1.5, 1.0]
    assert discounted_returns([1.0, 0.5, 1.0], 0.5) == [1.0 + 0.5 * 0.5 + 0.25 * 1.0, 0.5 + 0.5, 1.0]
    assert discounted_returns([1.0, 0.5, 1.0], 0.0) == [1.0, 0.5, 1.0]


def test_answers_are_compared_with_answers_not_with_tool_steps():
    """Tool steps earn ~1, answers 0 or 1: grouped by kind, a correct answer is above average
    and a wrong one below, whatever the tool steps earned (batch_norm made both negative)."""
    returns = [[1.1, 1.0, 1.0], [0.9, 1.2, 0.0]]
    kinds = [[TOOL, COT, ANSWER], [TOOL, TOOL, ANSWER]]
    adv, stats = _adv(returns, kinds, [[0, 1, 2], [0, 1, 2]], groups="kind")
    tools = np.array([1.1, 1.0, 0.9, 1.2])
    np.testing.assert_allclose(np.asarray(adv)[:, :2].ravel()[[0, 1, 2, 3]],
                               (tools - tools.mean()) / tools.std(), rtol=1e-4)  # float32 sum/sumsq
    np.testing.assert_allclose(np.asarray(adv)[:, 2], [1.0, -1.0], rtol=1e-5)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(np.asarray(stats["count"])[:2], [4, 2])


def test_running_statistics_by_hand_and_batch_of_one_learns():
    # batch 1: one answer step with return 1 -> its group mean is 1, std 0: advantage 0
    adv1, s1 = _adv([[1.0]], [[ANSWER]], [[4]])
    assert float(adv1[0, 0]) == 0.0
    # batch 2: return 0 at the same step; decay 0.5: count 0.5 + 1, sum 0.5, sumsq 0.5
    adv2, s2 = _adv([[0.0]], [[ANSWER]], [[4]], stats=s1)
    mean, var = 0.5 / 1.5, 0.5 / 1.5 - (0.5 / 1.5) ** 2
    np.testing.assert_allclose(float(adv2[0, 0]), (0.0 - mean) / np.sqrt(var), rtol=1e-5)
    assert float(adv2[0, 0]) < 0  # batch size 1 gets a signal once its group has history
    np.testing.assert_allclose(np.asarray(s2["count"])[4], 1.5)
    # groups that are absent are not forgotten
    _, s3 = _adv([[2.0]], [[TOOL]], [[0]], stats=s2)
    np.testing.assert_allclose(np.asarray(s3["count"])[4], 1.5)


def test_advantages_do_not_depend_on_how_a_batch_is_split_within_one_step():
    """The same spans as one row or as two rows (with padding) give the same advantages."""
    adv_a, _ = _adv([[1.0, 2.0, 4.0, 0.0]], [[TOOL] * 3 + [ANSWER]], [[0, 0, 0, 1]])
    r = jnp.asarray([[1.0, 2.0], [4.0, 0.0]])
    mask = jnp.asarray([[1.0, 1.0], [1.0, 1.0]])
    adv_b, _ = A.span_advantages(r, jnp.asarray([[TOOL, TOOL], [TOOL, ANSWER]]), jnp.asarray([[0, 0], [0, 1]]),
                                 mask, A.init_stats(), method="running_norm", groups="step", decay=0.5, eps=1e-6)
    np.testing.assert_allclose(np.asarray(adv_b).ravel(), np.asarray(adv_a).ravel(), rtol=1e-6)


def test_padding_spans_get_zero_and_leave_the_statistics_alone():
    r = jnp.asarray([[1.0, 99.0]])
    mask = jnp.asarray([[1.0, 0.0]])
    adv, stats = A.span_advantages(r, jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32), mask,
                                   A.init_stats(), method="raw", groups="step", decay=0.5, eps=1e-6)
    np.testing.assert_allclose(np.asarray(adv), [[1.0, 0.0]])
    assert float(stats["sum"][0]) == 1.0 and float(stats["count"][0]) == 1.0


def test_raw_and_value_methods():
    adv, _ = _adv([[2.0, 1.0]], [[TOOL, ANSWER]], [[0, 1]], method="raw")
    np.testing.assert_allclose(np.asarray(adv), [[2.0, 1.0]])
    adv, _ = _adv([[2.0, 1.0]], [[TOOL, ANSWER]], [[0, 1]], method="value", value=[[1.5, 1.5]])
    np.testing.assert_allclose(np.asarray(adv), [[0.5, -0.5]])
    with pytest.raises(ValueError, match="critic"):
        _adv([[1.0]], [[TOOL]], [[0]], method="value")


def test_steps_past_the_last_group_share_it():
    gid = A.group_ids(jnp.zeros((1, 3), jnp.int32), jnp.asarray([[0, A.GROUPS - 1, A.GROUPS + 5]]), "step")
    np.testing.assert_array_equal(np.asarray(gid), [[0, A.GROUPS - 1, A.GROUPS - 1]])
