import pytest

from spark_jax.rollout.selection import UsageCounts, select_action

ORDER = ("calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot")


def pick(scores, rule, usage=None, threshold=6.0):
    return select_action(scores, rule, threshold=threshold, usage=UsageCounts(usage), order=ORDER)


def test_lowest_viable_picks_the_lowest_score_above_threshold():
    scores = {"calculator": 9, "python": 6.5, "sympy": 5.9, "cot": 8, "search": 6.0}
    assert pick(scores, "lowest_viable") == "search"  # 6.0 is viable (>=), 5.9 is not
    assert pick(scores, "lowest_viable", threshold=7) == "cot"


def test_lowest_viable_ties_go_to_least_used_then_fixed_order():
    scores = {"calculator": 7, "python": 7, "sympy": 7, "cot": 9}
    assert pick(scores, "lowest_viable") == "calculator"  # all unused: fixed order
    assert pick(scores, "lowest_viable", {"calculator": 3, "python": 1, "sympy": 1}) == "python"
    assert pick(scores, "lowest_viable", {"calculator": 3, "python": 2, "sympy": 1}) == "sympy"


def test_least_used_picks_the_rarest_viable_action():
    scores = {"calculator": 9, "python": 6, "sympy": 2, "cot": 8}
    usage = {"calculator": 5, "python": 4, "cot": 1}  # sympy is unused but not viable
    assert pick(scores, "least_used", usage) == "cot"
    # Equal usage: the better score wins, then the fixed order.
    assert pick({"calculator": 7, "python": 8}, "least_used") == "python"
    assert pick({"calculator": 8, "python": 8}, "least_used") == "calculator"


def test_greedy_takes_the_highest_score():
    scores = {"calculator": 6, "python": 9, "cot": 9, "search": 7}
    assert pick(scores, "greedy", {"python": 100}) == "python"  # usage is irrelevant; tie -> order


@pytest.mark.parametrize("rule", ["lowest_viable", "least_used", "greedy"])
def test_nothing_viable_falls_back_to_the_highest_score(rule):
    assert pick({"calculator": 2, "python": 5.5, "cot": 5.5}, rule) == "python"


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown selection rule"):
        pick({"cot": 7}, "random")
    with pytest.raises(ValueError, match="no candidate"):
        pick({}, "greedy")
    with pytest.raises(ValueError, match="non-negative"):
        UsageCounts({"cot": -1})


def test_usage_counts_shares_and_roundtrip():
    u = UsageCounts()
    assert u.share("cot") == 0.0 and u.total == 0
    u.update(["cot", "cot", "python", "search"])
    assert u["cot"] == 2 and u.total == 4 and u.share("python") == 0.25
    assert UsageCounts(u.to_dict()) == u
    c = u.copy()
    c.add("cot")
    assert u["cot"] == 2 and c["cot"] == 3
