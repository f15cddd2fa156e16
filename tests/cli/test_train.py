"""`spark-jax train` / `export-model` end to end, and a real SIGKILL during checkpointing."""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import spark_jax
from spark_jax.cli import main
from spark_jax.model.checkpoint_hf import load_hf_directory

ROOT = pathlib.Path(__file__).parents[2]
CONFIG = str(ROOT / "configs" / "tiny.yaml")


def _ids(vocab, seed=0):
    return np.random.default_rng(seed).integers(3, vocab, size=(2, 30)).astype(np.int32)


def test_train_then_export_hf_and_peft(tiny_model_dir, stage1_run, tmp_path, capsys):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from spark_jax.rl.export import pretrained_from_run

    out = tmp_path / "run"
    rc = main(["train", "--algo", "sft", "--data", str(stage1_run), "--model", str(tiny_model_dir),
               "--out", str(out), "--steps", "3", "--lora-rank", "4", "--config", CONFIG,
               "seq_buckets=[256]", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and np.isfinite(summary["loss"])
    hf_dir, peft_dir = tmp_path / "hf", tmp_path / "peft"
    assert main(["export-model", str(out), "--hf", str(hf_dir), "--peft", str(peft_dir)]) == 0

    merged, cfg = load_hf_directory(hf_dir)
    ids = _ids(cfg.vocab_size)
    ours = np.asarray(merged(ids)[0])
    trained = pretrained_from_run(out)
    np.testing.assert_allclose(trained.logits(ids), ours, rtol=1e-5, atol=1e-5)
    # the trained policy runs the base model's compiled functions: no second compilation per shape
    base_model = spark_jax.load_pretrained(str(tiny_model_dir))
    base_model.score_continuations([5, 6, 7], [[8, 9]])
    trained.score_continuations([5, 6, 7], [[8, 9]])
    key = next(k for k in trained._compiled if k[0] == "score")
    assert trained._compiled[key] is base_model._compiled[key] and trained._compiled[key]._cache_size() == 1
    base = np.asarray(load_hf_directory(tiny_model_dir)[0](ids)[0])
    assert np.abs(ours - base).max() > 1e-4  # training moved the weights
    tid = torch.tensor(ids, dtype=torch.long)
    with torch.no_grad():
        hf = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()(tid).logits.numpy()
        peft = PeftModel.from_pretrained(
            LlamaForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), str(peft_dir)
        ).eval()(tid).logits.numpy()
    np.testing.assert_allclose(hf, ours, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(peft, ours, rtol=1e-4, atol=1e-4)


def test_peft_export_of_a_full_finetune_run_is_refused(tiny_model_dir, stage1_run, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--algo", "sft", "--data", str(stage1_run), "--model", str(tiny_model_dir),
                 "--out", str(out), "--steps", "1", "--lora-rank", "0", "--config", CONFIG,
                 "seq_buckets=[256]", "--no-progress"]) == 0
    assert main(["export-model", str(out), "--hf", str(tmp_path / "hf"), "--peft", str(tmp_path / "p")]) == 2


@pytest.mark.slow
def test_sigkill_during_checkpointing_then_rerun_resumes(tiny_model_dir, stage1_run, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--algo", "ppo", "--data", str(stage1_run), "--model", str(tiny_model_dir),
            "--out", str(out), "--steps", "40", "--config", CONFIG, "seq_buckets=[256]",
            "checkpoint.every=1", "checkpoint.keep=2", "--no-progress"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "spark_jax.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = out / "checkpoints"
    deadline = time.time() + 300
    try:
        # saves run back to back (every step, asynchronously): a kill now lands mid-save
        while time.time() < deadline and proc.poll() is None:
            steps = [int(p.name) for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.is_dir() else []
            if steps and max(steps) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished or died before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = max(int(p.name) for p in ckpts.glob("*") if p.name.isdigit())
    assert killed_at < 40
    assert main(args) == 0  # the rerun resumes from the last committed checkpoint by itself
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert all(np.isfinite(r["loss"]) for r in rows)


class _FakeTrainer:
    """Stands in for the Trainer: records the config `spark-jax train` would train with."""

    configs: list = []

    def __init__(self, cfg, out):
        _FakeTrainer.configs.append(cfg)
        self.step = 0

    def run(self, progress=True):
        return [{"step": 1, "loss": 0.0}]

    def close(self):
        pass


@pytest.fixture
def fake_trainer(monkeypatch):
    import spark_jax.rl.trainer

    _FakeTrainer.configs = []
    monkeypatch.setattr(spark_jax.rl.trainer, "Trainer", _FakeTrainer)
    return _FakeTrainer.configs


def _train_args(model_dir, data, out, *extra):
    return ["train", "--algo", "ppo", "--data", str(data), "--model", str(model_dir), "--out", str(out),
            "--config", CONFIG, "--no-progress", *extra]


def test_train_raises_grad_accum_to_fit_the_planned_memory(tiny_model_dir, stage1_run, tmp_path, capsys,
                                                           fake_trainer):
    from spark_jax.core.config_io import load_config
    from spark_jax.plan.advice import resolve_arch
    from spark_jax.plan.memory import USABLE_FRACTION, plan_memory
    from spark_jax.rl.config import TrainConfig

    cfg = load_config(TrainConfig, CONFIG, ["batch_size=8", "grad_accum=1", f"model={tiny_model_dir}"])
    arch = resolve_arch(str(tiny_model_dir), None)  # from config.json
    peak = {n: plan_memory(dataclasses.replace(cfg, grad_accum=n), arch).peak for n in (1, 2)}
    memory_gb = (peak[1] + peak[2]) / 2 / 1e9 / USABLE_FRACTION  # fits at grad_accum 2, not 1
    rc = main(_train_args(tiny_model_dir, stage1_run, tmp_path / "run", "batch_size=8", "grad_accum=1",
                          f"hardware.device_memory_gb={memory_gb}"))
    err = capsys.readouterr().err
    assert rc == 0 and [c.grad_accum for c in fake_trainer] == [2]
    assert "grad_accum 1 (as configured) -> 2" in err and len(err.strip().splitlines()) == 1
    assert fake_trainer[0].batch_size == 8 and fake_trainer[0].seq_buckets == cfg.seq_buckets


def test_train_refuses_a_config_that_cannot_fit_with_advice(tiny_model_dir, stage1_run, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "spark_jax.cli",
                           *_train_args(tiny_model_dir, stage1_run, out, "hardware.device_memory_gb=0.001")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "does NOT fit" in proc.stderr and "Change" in proc.stderr and "--no-plan" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()  # refused before the trainer was built


def test_no_plan_skips_the_memory_plan(tiny_model_dir, stage1_run, tmp_path, capsys, fake_trainer):
    rc = main(_train_args(tiny_model_dir, stage1_run, tmp_path / "run", "hardware.device_memory_gb=0.001",
                          "--no-plan"))
    assert rc == 0 and len(fake_trainer) == 1 and fake_trainer[0].grad_accum == 2  # tiny.yaml's
    assert "memory plan" not in capsys.readouterr().err


def test_train_warns_and_goes_on_when_the_architecture_is_unknown(stage1_run, tmp_path, capsys, fake_trainer):
    odd = tmp_path / "odd-model.bin"
    odd.write_bytes(b"")
    rc = main(_train_args(odd, stage1_run, tmp_path / "run", "hardware.device_memory_gb=0.001"))
    err = capsys.readouterr().err
    assert rc == 0 and len(fake_trainer) == 1 and fake_trainer[0].grad_accum == 2
    assert "warning: no memory plan" in err and "odd-model.bin" in err and len(err.strip().splitlines()) == 1
