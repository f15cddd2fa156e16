import pytest

from spark_jax.rollout.rewards import RewardWeights, rarity, step_reward
from spark_jax.rollout.selection import UsageCounts


def test_rarity_is_one_minus_the_share_so_far():
    u = UsageCounts({"cot": 3, "python": 1})
    assert rarity("cot", u) == pytest.approx(0.25)
    assert rarity("python", u) == pytest.approx(0.75)
    assert rarity("units", u) == 1.0
    assert rarity("cot", UsageCounts()) == 1.0  # before any choice everything is rare


def test_step_reward_components_and_total():
    w = RewardWeights()  # defaults 1.0 / 0.5 / 1.0
    r, c = step_reward(score=7.0, rarity_value=0.8, correct=None, weights=w)
    assert c == pytest.approx({"quality": 0.7, "diversity": 0.4, "outcome": 0.0})
    assert r == pytest.approx(1.1)
    r, c = step_reward(score=None, rarity_value=None, correct=True, weights=w)
    assert (r, c["outcome"]) == (1.0, 1.0)
    r, c = step_reward(score=None, rarity_value=None, correct=False, weights=RewardWeights(outcome=2.0))
    assert r == 0.0
    r, c = step_reward(score=10, rarity_value=1.0, correct=True, weights=RewardWeights(0.5, 2.0, 3.0))
    assert c == pytest.approx({"quality": 0.5, "diversity": 2.0, "outcome": 3.0}) and r == pytest.approx(5.5)


def test_weights_validate():
    with pytest.raises(ValueError, match="diversity"):
        RewardWeights(diversity=float("nan"))
