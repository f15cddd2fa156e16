"""The CLI: two real subprocess runs (entry point, exit codes) and the rest in-process, since
every `spark-jax` start imports the model package (jax) and costs seconds."""

import json
import subprocess
import sys

from spark_jax.cli import main
from spark_jax.tools import TOOL_NAMES


def _subprocess(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "spark_jax.cli", *args], capture_output=True, text=True, input=stdin, timeout=120
    )


def test_subprocess_tools_list_and_exit_codes():
    out = _subprocess("tools", "--formats")
    assert out.returncode == 0, out.stderr
    listed = [line.split(":")[0] for line in out.stdout.splitlines() if not line.startswith(" ")]
    assert listed == list(TOOL_NAMES)
    bad = _subprocess("tool", "calculator", "1/0")
    assert bad.returncode == 1 and "division by zero" in bad.stderr


def test_tool_exit_codes(capsys):
    assert main(["tool", "calculator", "2^10"]) == 0
    assert capsys.readouterr().out.strip() == "1024"
    assert main(["tool", "nope", "x"]) == 1
    assert "valid tools" in capsys.readouterr().err


def test_tool_json_and_stdin(capsys, monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("print(6 * 7)\n"))
    assert main(["tool", "python", "-", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["output"] == "42"


def test_index_corpus_then_search(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "x1", "title": "Tides", "text": "The Moon's gravity raises tides."}) + "\n")
    assert main(["index-corpus", str(corpus), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["tool", "search", "moon tides", "--corpus", str(tmp_path / "idx")]) == 0
    assert "Tides (id x1" in capsys.readouterr().out
    assert main(["index-corpus", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "i2")]) == 2
    assert "cannot read corpus" in capsys.readouterr().err


def test_tools_sandbox_shows_the_mode(capsys):
    assert main(["tools", "--sandbox"]) == 0
    out = capsys.readouterr().out
    mode_line = [line for line in out.splitlines() if line.startswith("python sandbox mode: ")]
    assert len(mode_line) == 1
    mode = mode_line[0].split(": ", 1)[1]
    assert mode.split()[0] in ("root", "user-namespace", "unavailable")
    layers = json.loads(out.split("python sandbox layers: ", 1)[1])
    assert layers["mode"] == mode.split()[0]


def test_tools_sandbox_states_the_task_limit(capsys, monkeypatch):
    import spark_jax.tools.isolation.sandbox as sandbox

    assert main(["tools", "--sandbox"]) == 0
    out = capsys.readouterr().out
    if "python sandbox mode: unavailable" not in out:
        line = [x for x in out.splitlines() if x.startswith("python sandbox task limit: ")]
        assert len(line) == 1 and "NO task limit" not in line[0], out
    monkeypatch.setattr(sandbox, "sandbox_layers", lambda settings=None: {"mode": "unsafe", "tasks": "off: x"})
    assert main(["tools", "--sandbox"]) == 0
    assert "python sandbox task limit: off: x (the unsafe mode has NO task limit" in capsys.readouterr().out
