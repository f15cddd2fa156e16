"""``spark-jax curves``: window means by hand, the Markdown table and the PNG."""

import json

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
    assert main(["curves", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "metrics.jsonl: not found" in capsys.readouterr().err
