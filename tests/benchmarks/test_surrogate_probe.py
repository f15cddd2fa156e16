"""benchmarks/surrogate_probe.py: the table it writes from each surrogate run's metrics rows."""

from __future__ import annotations

import importlib.util
import math
import pathlib

ROOT = pathlib.Path(__file__).parents[2]


def _probe():
    spec = importlib.util.spec_from_file_location("surrogate_probe", ROOT / "benchmarks" / "surrogate_probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_and_table_from_metrics_rows():
    probe = _probe()
    rows = [{"step": 1, "kl_action_tokens": 0.0, "kl_neg_input": math.nan, "kl_pos_input": 0.0,
             "dlogp_neg_input": math.nan, "format_logp": -0.5, "header_entropy": 1.0, "step_time_s": 2.0},
            {"step": 2, "kl_action_tokens": 0.4, "kl_neg_input": 0.9, "kl_pos_input": 0.1,
             "dlogp_neg_input": -1.2, "format_logp": -0.7, "header_entropy": 0.8, "step_time_s": 4.0},
            {"step": 3, "kl_action_tokens": 0.3, "kl_neg_input": 0.8, "kl_pos_input": 0.2,
             "dlogp_neg_input": -1.0, "format_logp": -0.9, "header_entropy": 0.7, "step_time_s": 3.0}]
    s = probe.summarize(rows)
    assert s["steps"] == 3 and s["kl_action_tokens_last"] == 0.3 and s["kl_action_tokens_max"] == 0.4
    assert s["kl_neg_input_last"] == 0.8 and s["format_logp_first"] == -0.5 and s["format_logp_last"] == -0.9
    assert s["kl_curve"] == [0.0, 0.4, 0.3] and s["step_time_s"] == 3.0
    md = probe.table({"awr": s, "ppo": probe.summarize(rows[:2])})
    assert "| awr | 3 | 0.300 | 0.400 | 0.800 | 0.200 | -1.000 | -0.500 → -0.900 | 0.700 |" in md
    assert "| 3 | 0.300 | - |" in md  # the shorter run has no step 3
