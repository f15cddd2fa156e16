import logging

import pytest

from spark_jax.backends.accounting import BudgetExceeded, CostTracker, Pricer, lookup_price


def test_price_table_and_snapshots():
    assert lookup_price("gpt-4o") == (2.50, 10.00)
    assert lookup_price("gpt-4o-mini") == (0.15, 0.60)
    assert lookup_price("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert lookup_price("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert lookup_price("llama-3-8b") is None
    assert lookup_price("llama-3-8b", {"llama-3-8b": (0.1, 0.2)}) == (0.1, 0.2)
    assert lookup_price("gpt-4o", {"gpt-4o": (1.0, 1.0)}) == (1.0, 1.0)


def test_cost_of_a_call():
    assert Pricer("gpt-4o").cost(1_000_000, 100_000) == pytest.approx(2.50 + 1.00)
    assert Pricer("gpt-4o-mini").cost(2000, 100) == pytest.approx((2000 * 0.15 + 100 * 0.60) / 1e6)


def test_unknown_model_costs_zero_and_warns_once(caplog):
    with caplog.at_level(logging.WARNING):
        p = Pricer("my-unpriced-model-xyz")
        Pricer("my-unpriced-model-xyz")
    assert p.cost(10**6, 10**6) == 0.0
    assert caplog.text.count("no price known for model 'my-unpriced-model-xyz'") == 1


def test_budget():
    t = CostTracker(1.0)
    t.check()
    t.add(0.6)
    t.check()
    t.add(0.4)
    with pytest.raises(BudgetExceeded, match="spent \\$1.0000 of max_cost_usd=\\$1.0000"):
        t.check()
    CostTracker(None).check()
    with pytest.raises(ValueError):
        CostTracker(-1)
