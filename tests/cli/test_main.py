"""The spark-jax entry point: help, and errors that name the bad input."""

from __future__ import annotations

import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "spark_jax", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    proc = _run("--help")
    assert proc.returncode == 0
    assert "chat" in proc.stdout and "convert" in proc.stdout


def test_chat_with_missing_model_path_is_a_clear_error(tmp_path):
    proc = _run("chat", "hi", "--model", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "model path not found" in proc.stderr and "missing" in proc.stderr


def test_convert_writes_loadable_directory(tiny_hf, tmp_path):
    proc = _run("convert", str(tiny_hf[0]), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "model.safetensors").is_file()
