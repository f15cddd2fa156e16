"""Paired differences over seeds and their t intervals, on hand-computed values."""

import math

import numpy as np
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


def _rows(correct, actions=None, headers=None, ids=None):
    """Evaluation rows: ``correct`` per question, optional tool actions and header log-probs."""
    rows = []
    for i, c in enumerate(correct):
        rows.append({"question_id": (ids or range(len(correct)))[i], "category": "math", "correct": bool(c),
                     "pred": "A", "actions": (list(actions[i]) if actions else []) + ["answer"],
                     "header_logprobs": headers[i] if headers else []})
    return rows


def test_resampled_figure_with_every_question_once_is_the_summary_figure():
    from spark_jax.eval.metrics import summarize_system
    from spark_jax.eval.paired import QUESTION_LEVEL_KEYS, resampled_figure

    headers = [[{"cot": -0.1, "python": -2.0}], [], [{"cot": -1.0, "python": -1.0}, {"cot": -3.0, "python": -0.2}]]
    rows = _rows([1, 0, 1], actions=[["python", "cot"], ["search"], ["python"]], headers=headers)
    summary = summarize_system(rows, categories=("math",))
    ones = np.ones((1, len(rows)))
    for key in QUESTION_LEVEL_KEYS:
        assert resampled_figure(rows, key, ones)[0] == pytest.approx(summary[key], abs=1e-12), key
    # drawing the second question twice and the first not at all
    assert resampled_figure(rows, "accuracy", np.array([[0.0, 2.0, 1.0]]))[0] == pytest.approx(1 / 3)
    # no tool call, no header scores in a resample: undefined, not zero
    assert np.isnan(resampled_figure(_rows([1, 0]), "tool_entropy_bits", np.ones((1, 2)))[0])
    assert np.isnan(resampled_figure(rows, "header_entropy_bits", np.array([[0.0, 3.0, 0.0]]))[0])
    with pytest.raises(ValueError, match="no question-level figure for 'answered_rate'"):
        resampled_figure(rows, "answered_rate", ones)


def test_equal_seed_differences_from_one_question_are_not_a_shown_difference():
    """The bug: every seed's accuracy difference was the same single question (0.7 points of 140),
    the t interval over seeds collapsed to a point and the table read it as 'A > B'."""
    n = 140
    a, b = [0] * n, [0] * n
    a[0] = 1
    per_seed = {s: {"A": {"accuracy": 1 / n}, "B": {"accuracy": 0.0}} for s in (0, 1, 2)}
    rows = {s: {"A": _rows(a), "B": _rows(b)} for s in (0, 1, 2)}
    metric = (("accuracy (%, official)", "accuracy"),)
    (seeds_only,) = paired_differences(per_seed, [("A", "B")], metrics=metric)
    assert seeds_only["ci95"] == pytest.approx([1 / n, 1 / n]) and seeds_only["reading"] == "A > B"
    (row,) = paired_differences(per_seed, [("A", "B")], metrics=metric, question_rows=rows)
    lo, hi = row["ci95_questions"]
    assert lo <= 0 < hi and row["reading"] == "no difference shown"
    table = paired_table([row])
    assert "| difference | metric | mean [95% CI over seeds] | 95% CI over questions | per seed | intervals show |" \
        in table
    assert f"| A − B | accuracy (%, official) | 0.7 [0.7, 0.7] | [{100 * lo:.1f}, {100 * hi:.1f}] |" in table


def test_a_difference_on_many_questions_is_shown_by_both_intervals():
    n = 60
    per_seed, rows = {}, {}
    for s, extra in enumerate([30, 32, 34]):
        a = [1] * extra + [0] * (n - extra)
        per_seed[s] = {"A": {"accuracy": extra / n}, "B": {"accuracy": 0.1}}
        rows[s] = {"A": _rows(a), "B": _rows([1] * 6 + [0] * (n - 6))}
    (row,) = paired_differences(per_seed, [("A", "B")], metrics=(("accuracy (%, official)", "accuracy"),),
                                question_rows=rows)
    assert row["ci95"][0] > 0 and row["ci95_questions"][0] > 0 and row["reading"] == "A > B"
    # the same resample is drawn for both arms: B, worse on every question A gets right, stays below
    (flip,) = paired_differences({s: {"B": v["B"], "A": v["A"]} for s, v in per_seed.items()}, [("B", "A")],
                                 metrics=(("accuracy (%, official)", "accuracy"),), question_rows=rows)
    assert flip["ci95_questions"][1] < 0 and flip["reading"] == "B < A"


def test_the_intervals_must_agree_to_show_a_difference():
    assert reading("A", "B", [0.1, 0.2], [0.05, 0.3]) == "A > B"
    assert reading("A", "B", [-0.2, -0.1], [-0.3, -0.05]) == "A < B"
    assert reading("A", "B", [0.1, 0.2], [-0.05, 0.3]) == "no difference shown"
    assert reading("A", "B", [0.1, 0.2], [-0.3, -0.05]) == "no difference shown"
    assert reading("A", "B", [0.1, 0.2], None) == "no difference shown"  # computed, but undefined
    assert reading("A", "B", None, [0.1, 0.2]) == "no interval"


def test_question_rows_that_are_not_the_same_questions_are_refused():
    from spark_jax.eval.paired import question_bootstrap_interval

    per_seed_rows = {0: {"A": _rows([1, 0]), "B": _rows([1, 0])},
                     1: {"A": _rows([1, 0]), "B": _rows([1, 0], ids=[0, 7])}}
    with pytest.raises(ValueError, match=r"seed 1, B: .*missing question_id \[1\], unexpected \[7\]"):
        question_bootstrap_interval(per_seed_rows, "A", "B", "accuracy", [0, 1])
    with pytest.raises(ValueError, match="seed 1: no evaluation rows for C"):
        question_bootstrap_interval({0: {"A": _rows([1]), "C": _rows([1])}, 1: {"A": _rows([1])}}, "A", "C",
                                    "accuracy", [0, 1])
    twice = {0: {"A": _rows([1, 0]), "B": _rows([1, 0], ids=[0, 0])}}
    with pytest.raises(ValueError, match="seed 0, B: a question appears twice"):
        question_bootstrap_interval(twice, "A", "B", "accuracy", [0])


def test_most_diverse_acting_text_gives_both_intervals():
    from spark_jax.eval.paired import most_diverse_acting, most_diverse_acting_text

    actions = {"A": [["python"], ["cot"], ["search"], ["units"]] * 5, "B": [["python"], ["python"], ["cot"],
                                                                             ["cot"]] * 5}
    rows = {s: {n: _rows([0] * 20, actions=acts) for n, acts in actions.items()} for s in (0, 1)}
    per_seed = {s: {n: {"tool_entropy_bits": e, "format_error_rate": 0.0} for n, e in (("A", 2.0), ("B", 1.0))}
                for s in (0, 1)}
    choice = most_diverse_acting(per_seed, question_rows=rows)
    lo, hi = choice["paired"]["ci95_questions"]
    assert 0 < lo < hi
    text = most_diverse_acting_text(choice, "score")
    assert text.endswith(f"A − B (the next): 1.00 [1.00, 1.00] (seeds), [{lo:.2f}, {hi:.2f}] (questions) bits, "
                         "intervals show: A > B.")
