"""Trainer: resume equals an uninterrupted run, interrupted saves, config guard, frozen base."""

import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from spark_jax.core.config_io import ConfigError, load_config
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.trainer import Trainer

CONFIG = pathlib.Path(__file__).parents[2] / "configs" / "tiny.yaml"
TIMING = {"tokens_per_s", "records_per_s", "step_time_s"}


def tiny_cfg(model_dir, run_dir, *overrides):
    # one bucket: one compilation per trainer keeps these tests fast
    return load_config(TrainConfig, CONFIG, [f"model={model_dir}", f"data={run_dir}", "seq_buckets=[256]",
                                             *overrides])


def _params(trainer):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(jax.device_get(trainer.state["params"]))}


def _assert_rows_equal(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra["step"] == rb["step"]
        for k in ra:
            if k in TIMING or ra[k] is None:
                continue
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-6, atol=1e-6, err_msg=f"step {ra['step']} {k}")


def _train(cfg, out, until=None):
    t = Trainer(cfg, out)
    try:
        rows = t.run(until, progress=False)
        return t, rows
    finally:
        t.close()


def test_resume_after_interruption_equals_uninterrupted_run(tiny_model_dir, stage1_run, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, stage1_run, "steps=10", "checkpoint.every=5")
    full, rows_full = _train(cfg, tmp_path / "full")

    out = tmp_path / "resumed"
    first, rows_a = _train(cfg, out, until=5)
    assert first.checkpoints.all_steps() == [5]
    # An interrupted save of step 10: orbax's uncommitted temporary directory with partial content.
    ckpts = out / "checkpoints"
    partial = ckpts / "10.orbax-checkpoint-tmp-1234567890"
    shutil.copytree(ckpts / "5", partial)
    for f in list(partial.rglob("*"))[::2]:
        if f.is_file():
            f.unlink()
    del first
    second, rows_b = _train(cfg, out)  # a fresh trainer resumes from step 5 by itself
    assert rows_b[0]["step"] == 6
    _assert_rows_equal(rows_full, rows_a + rows_b)
    pa, pb = _params(full), _params(second)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_allclose(pa[k], pb[k], rtol=1e-6, atol=1e-6, err_msg=k)
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 11))
    for key in ("step", "loss", "kl", "clip_frac", "entropy", "lr", "grad_norm", "tokens_per_s"):
        assert key in logged[0]
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert sorted(second.checkpoints.all_steps()) == [5, 10]


def test_resume_with_a_different_config_is_refused(tiny_model_dir, stage1_run, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, stage1_run, "steps=2", "checkpoint.every=1", "algo=sft")
    _train(cfg, tmp_path / "run")
    changed = tiny_cfg(tiny_model_dir, stage1_run, "steps=2", "checkpoint.every=1", "algo=sft", "optim.lr=0.5")
    # the message names each changed key with both values
    with pytest.raises(ConfigError, match=re.escape(f"optim.lr: {cfg.optim.lr!r} in config.yaml, 0.5 now")):
        Trainer(changed, tmp_path / "run")


def test_full_finetune_with_value_head_trains_every_parameter(tiny_model_dir, stage1_run, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, stage1_run, "steps=2", "lora.rank=0", "full_finetune=true",
                   "ppo.advantage=value", "ppo.ratio_level=sequence", "grad_accum=1")
    t, rows = _train(cfg, tmp_path / "run")
    assert set(t.state["params"]) == {"policy", "critic"}
    assert "value_loss" in rows[-1] and np.isfinite(rows[-1]["value_loss"])
    n_policy = sum(x.size for x in jax.tree_util.tree_leaves(t.state["params"]["policy"]))
    assert n_policy == t.policy_module().config.num_params()


def test_lora_base_weights_get_no_optimizer_state(tiny_model_dir, stage1_run, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, stage1_run, "steps=1")
    t, _ = _train(cfg, tmp_path / "run")
    trainable = sum(x.size for x in jax.tree_util.tree_leaves(t.state["params"]))
    opt = sum(x.size for x in jax.tree_util.tree_leaves(t.state["opt_state"]) if x.ndim > 0)
    assert opt == 2 * trainable  # Adam's mu and nu over the adapters only
    frozen = sum(x.size for x in jax.tree_util.tree_leaves(t.frozen))
    assert frozen > 10 * trainable


def test_grad_accum_may_change_on_resume_but_the_objective_may_not():
    from spark_jax.rl.trainer import config_differences

    old = {"grad_accum": 1, "ppo": {"gamma": 1.0}, "packing": True}
    assert config_differences(old, {**old, "grad_accum": 4}) == []  # the update does not depend on it
    assert config_differences(old, {**old, "ppo": {"gamma": 0.0}}) == ["ppo.gamma"]
    assert config_differences(old, {**old, "packing": False}) == ["packing"]
