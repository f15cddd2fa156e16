"""``spark-jax curves``: window means by hand, the Markdown table and the PNG."""

import json

import pytest

from spark_jax.cli import main
from spark_jax.rl.curves import curves_table, window_mean


def _run(tmp_path, name, losses):
    d = tmp_path / name
    d.mkdir()
    rows = [{"step": i + 1, "loss": x, "kl": 0.1 * i, "reward_answer": None} for i, x in enumerate(losses)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_window_means_and_table_by_hand(tmp_path):
    rows = [{"step": i + 1, "loss": float(i), "reward_answer": None} for i in range(6)]
    assert window_mean(rows[:2], "loss") == 0.5
    assert window_mean(rows, "reward_answer") is None  # no such steps: not a 0
    table = curves_table({"sft": rows}, window=2)
    assert "| sft | 6 | loss | 0.500 -> 4.500 | 0.500, 2.500, 4.500 |" in table
    assert "reward_answer" not in table


def test_cli_writes_markdown_and_png(tmp_path, capsys):
    a = _run(tmp_path, "a", [3.0, 2.0, 1.0, 0.5])
    assert main(["curves", f"SFT={a}", "--out", str(tmp_path / "out"), "--window", "2"]) == 0
    assert "| SFT | 4 | loss | 2.500 -> 0.750 |" in (tmp_path / "out" / "curves.md").read_text()
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert "kl_neg_header" not in (tmp_path / "out" / "curves.md").read_text()  # absent: no row
    assert main(["curves", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "metrics.jsonl: not found" in capsys.readouterr().err


def test_diagnostics_appear_in_table(tmp_path):
    rows = [{"step": i + 1, "loss": 1.0, "kl_action_tokens": 0.1 * i, "kl_neg_header": 0.2, "dlogp_pos_input": 0.5,
             "header_entropy": 1.5, "header_entropy_pooled": 2.0, "format_logp": -0.1, "kl_pos_header": None}
            for i in range(4)]
    table = curves_table({"PPO": rows}, window=2)
    for key in ("kl_action_tokens", "kl_neg_header", "dlogp_pos_input", "header_entropy", "header_entropy_pooled",
                "format_logp"):
        assert f"| PPO | 4 | {key} |" in table
    assert "| PPO | 4 | kl_action_tokens | 0.050 -> 0.250 |" in table
    assert "kl_pos_header" not in table  # an empty group is not a 0


def test_read_metrics_names_the_bad_line(tmp_path):
    from spark_jax.core.jsonl import JsonlError
    from spark_jax.rl.curves import read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n\n{"step": 2\n')
    with pytest.raises(JsonlError, match=r"metrics\.jsonl:3: not valid JSON"):
        read_metrics(tmp_path)
