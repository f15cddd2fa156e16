"""Paired differences over seeds and their t intervals, on hand-computed values."""

import math

import pytest

from spark_jax.eval.paired import (claim_pairs, means_table, paired_differences, paired_table, reading, seed_means,
                                   t_interval)


def test_t_interval_hand_computed():
    # mean 2, sd 1, n 3: t(0.975, 2) = 4.302653, half = 4.302653 / sqrt(3)
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (lo + hi) / 2 == pytest.approx(2.0)
    assert (hi - lo) / 2 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert t_interval([5.0]) is None and t_interval([]) is None


def test_claim_pairs_in_order_and_only_present_systems():
    assert claim_pairs(["base", "SFT-greedy", "SFT-rarity", "PPO-rarity"]) == [
        ("PPO-rarity", "SFT-rarity"), ("SFT-rarity", "SFT-greedy"), ("SFT-greedy", "base"), ("SFT-rarity", "base"),
        ("PPO-rarity", "base")]
    assert claim_pairs(["SFT-rarity", "PPO-rarity"]) == [("PPO-rarity", "SFT-rarity")]


PER_SEED = {
    0: {"base": {"accuracy": 0.10, "tool_entropy_bits": None, "header_entropy_bits": 1.0, "answered_rate": 1.0},
        "SFT-rarity": {"accuracy": 0.20, "tool_entropy_bits": 1.5, "header_entropy_bits": 0.5, "answered_rate": 1.0}},
    1: {"base": {"accuracy": 0.10, "tool_entropy_bits": None, "header_entropy_bits": 1.0, "answered_rate": 1.0},
        "SFT-rarity": {"accuracy": 0.30, "tool_entropy_bits": 2.5, "header_entropy_bits": 0.7, "answered_rate": 0.9}},
}


def test_paired_differences_are_seed_by_seed():
    rows = {r["key"]: r for r in paired_differences(PER_SEED, [("SFT-rarity", "base")])}
    acc = rows["accuracy"]
    assert acc["differences"] == pytest.approx([0.1, 0.2]) and acc["mean"] == pytest.approx(0.15)
    # n = 2: t(0.975, 1) = 12.7062; sd of (0.1, 0.2) = 0.0707107; half = 12.7062 * 0.0707107 / sqrt(2)
    assert acc["ci95"][1] - acc["mean"] == pytest.approx(12.7062047 * 0.05, rel=1e-5)
    assert rows["header_entropy_bits"]["differences"] == pytest.approx([-0.5, -0.3])
    # no pooled entropy for the base model: no seed counts, no interval
    assert rows["tool_entropy_bits"]["seeds"] == [] and rows["tool_entropy_bits"]["mean"] is None
    table = paired_table(list(rows.values()))
    assert ("| SFT-rarity − base | accuracy (%, official) | 15.0 [-48.5, 78.5] | 0: 10.0, 1: 20.0 | "
            "no difference shown |") in table
    assert "| SFT-rarity − base | pooled tool entropy (bits) | - | - | no interval |" in table


def test_reading_says_what_the_interval_excludes():
    """The issue's reading rule, mechanically: a side wins only when the interval excludes 0."""
    assert reading("PPO", "SFT", [0.01, 0.5]) == "PPO > SFT"
    assert reading("PPO", "SFT", [-0.5, -0.01]) == "PPO < SFT"
    assert reading("PPO", "SFT", [-0.1, 0.2]) == "no difference shown"
    assert reading("PPO", "SFT", [0.0, 0.2]) == "no difference shown"  # touching 0 is not beyond it
    assert reading("PPO", "SFT", None) == "no interval"
    three = {s: {"A": {"accuracy": 0.5 + d}, "B": {"accuracy": 0.5}} for s, d in enumerate([0.10, 0.11, 0.12])}
    (row,) = paired_differences(three, [("A", "B")], metrics=(("accuracy (%, official)", "accuracy"),))
    assert row["reading"] == "A > B" and row["ci95"][0] > 0


def test_seed_means_table():
    means = seed_means(PER_SEED)
    assert means["SFT-rarity"]["tool_entropy_bits"]["mean"] == pytest.approx(2.0)
    assert means["base"]["tool_entropy_bits"] == {"mean": None, "ci95": None, "n": 0}
    table = means_table(means)
    assert "pooled tool entropy (bits) [95% CI over seeds] | per-state header entropy (bits)" in table
    assert "| SFT-rarity | 2 | 2.00 [-4.35, 8.35] |" in table


def test_claim_pairs_for_warm_started_arms():
    systems = ["base", "SFT-greedy", "SFT-rarity", "SFT-rarity-from-SFT", "PPO-rarity-from-SFT",
               "PPO-greedy-from-SFT", "CAND-rarity-from-SFT"]
    pairs = claim_pairs(systems)
    assert pairs[:6] == [
        ("SFT-rarity", "SFT-greedy"),
        ("SFT-rarity-from-SFT", "SFT-rarity"),
        ("PPO-rarity-from-SFT", "SFT-rarity"),
        ("PPO-rarity-from-SFT", "SFT-rarity-from-SFT"),
        ("PPO-greedy-from-SFT", "SFT-greedy"),
        ("CAND-rarity-from-SFT", "SFT-rarity"),
    ]
    assert ("CAND-rarity-from-SFT", "SFT-rarity-from-SFT") in pairs
    # no compute-matched partner exists for the greedy data, and no arm is paired with itself
    assert ("PPO-greedy-from-SFT", "SFT-greedy-from-SFT") not in pairs
    assert all(a != b for a, b in pairs)
    assert pairs[-6:] == [(s, "base") for s in systems[1:]]


def test_plot_seeds_writes_one_panel_per_figure(tmp_path):
    from spark_jax.eval.paired import MEAN_METRICS, plot_seeds

    per_seed = {s: {"base": {"accuracy": 0.1, "tool_entropy_bits": None, "answered_rate": 1.0},
                    "SFT-rarity": {"accuracy": 0.1 + s / 100, "tool_entropy_bits": 1.0 + s / 10,
                                   "header_entropy_bits": 0.5, "answered_rate": 1.0, "format_error_rate": 0.0,
                                   "tool_calls_per_question": 1.5}} for s in (0, 1, 2)}
    plot_seeds(tmp_path / "seeds.png", per_seed, "test")
    assert (tmp_path / "seeds.png").stat().st_size > 1000
    assert ("format errors (%)", "format_error_rate") in MEAN_METRICS


def test_most_diverse_acting_skips_systems_that_do_not_act():
    from spark_jax.eval.paired import most_diverse_acting, most_diverse_acting_text

    def system(entropy, errors):
        return {"tool_entropy_bits": entropy, "format_error_rate": errors}

    per_seed = {s: {"base": system(None, 1.0),
                    "loud": system(3.0, 0.5),  # the most diverse, but half its turns are format errors
                    "A": system(2.0 + d, 0.0),
                    "B": system(1.8 + d, 0.02 + d)} for s, d in enumerate([0.0, 0.05, 0.01])}
    choice = most_diverse_acting(per_seed)
    assert choice["system"] == "A" and choice["runner_up"] == "B"
    assert choice["tool_entropy_bits"] == pytest.approx(2.02)
    # the same 0.2 bits in every seed: the paired interval collapses onto it
    assert choice["paired"]["differences"] == pytest.approx([0.2, 0.2, 0.2])
    assert choice["paired"]["reading"] == "A > B"
    text = most_diverse_acting_text(choice, "generate")
    assert text.startswith("**Acting with the most diverse tools** (generate mode; systems with at most 5% format "
                           "errors, highest mean pooled tool entropy over seeds): A, 2.02 bits; A − B (the next): "
                           "0.20 [0.20, 0.20] bits, interval shows: A > B.")
    alone = most_diverse_acting({s: {"A": v["A"], "loud": v["loud"]} for s, v in per_seed.items()})
    assert alone["runner_up"] is None and alone["paired"] is None
    assert most_diverse_acting_text(alone, "generate").endswith("A, 2.02 bits; no other system acts.")
    assert most_diverse_acting({0: {"base": system(None, 1.0)}}) is None
    assert most_diverse_acting_text(None, "generate").endswith("no system acts.")
