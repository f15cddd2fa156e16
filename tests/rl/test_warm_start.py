"""Warm start: a run that begins from another run's adapters, with the KL measured to them."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from spark_jax.core.config_io import ConfigError, load_config
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.export import pretrained_from_run
from spark_jax.rl.trainer import Trainer

CONFIG = pathlib.Path(__file__).parents[2] / "configs" / "tiny.yaml"


def _cfg(model_dir, run_dir, *overrides):
    return load_config(TrainConfig, CONFIG, [f"model={model_dir}", f"data={run_dir}", "seq_buckets=[256]",
                                             "action_buckets=[32,64]", "grad_accum=1", *overrides])


def _logits(module, batch):
    logits, _ = module(jnp.asarray(batch["input_ids"]), None, jnp.asarray(batch["attention_mask"]))
    return np.asarray(logits) * np.asarray(batch["attention_mask"])[..., None]


def test_warm_start_from_sft_run(tiny_model_dir, judged_stage1_run, tmp_path):
    src_dir, out = tmp_path / "sft", tmp_path / "ppo"
    src = Trainer(_cfg(tiny_model_dir, judged_stage1_run, "algo=sft", "steps=2", "checkpoint.every=2",
                       "optim.warmup_steps=0"), src_dir)
    try:
        src.run(progress=False)
        src_policy = src.policy_module()
    finally:
        src.close()

    # settings that shape the adapters must match, and the error names the field
    with pytest.raises(ConfigError, match="lora.rank"):
        Trainer(_cfg(tiny_model_dir, judged_stage1_run, f"init_from={src_dir}", "lora.rank=8"), tmp_path / "x")
    with pytest.raises(ConfigError, match="lora.alpha"):
        Trainer(_cfg(tiny_model_dir, judged_stage1_run, f"init_from={src_dir}", "lora.alpha=4.0"), tmp_path / "y")
    with pytest.raises(ConfigError, match="init_step 7"):
        Trainer(_cfg(tiny_model_dir, judged_stage1_run, f"init_from={src_dir}", "init_step=7"), tmp_path / "z")

    cfg = _cfg(tiny_model_dir, judged_stage1_run, "algo=ppo", f"init_from={src_dir}", "steps=2",
               "checkpoint.every=1", "candidates.loss=xent", "candidates.token_header=false")
    assert cfg.kl_reference == "init"
    t = Trainer(cfg, out)
    try:
        assert t.cfg.init_step == 2
        assert yaml.safe_load((out / "config.yaml").read_text())["init_step"] == 2
        batch = next(t.data)
        # step 0: the policy is the source policy, and the reference is that same policy
        np.testing.assert_array_equal(_logits(t.policy_module(), batch), _logits(src_policy, batch))
        for a, b in zip(jax.tree.leaves(t.ref), jax.tree.leaves(t.state["params"]["policy"])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        t.state, m = t._step(t.state, t.frozen, t.ref, t._put_batch(batch))
        m = {k: np.asarray(v) for k, v in m.items()}
        assert abs(float(m["kl_action_tokens"])) < 1e-6 and abs(float(m["header_kl"])) < 1e-6
        for sign in ("pos", "neg"):
            for part in ("header", "input"):
                d = float(m[f"dlogp_{sign}_{part}"])
                assert np.isnan(d) or abs(d) < 1e-5
        assert float(m["judged_states"]) > 0 and float(m["cand_loss"]) > 0
        assert 0 < float(m["header_entropy"]) <= np.log(10) + 1e-5
        assert float(m["header_entropy_pooled"]) >= float(m["header_entropy"]) - 1e-5  # concavity
        assert float(m["format_logp"]) < 0
        assert float(m["grad_norm"]) > 0
        t.run(progress=False)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["kl_action_tokens"] > 0  # the policy moved off its reference
        trained = t.policy_module()
    finally:
        t.close()

    # a resume must find the same source step
    with pytest.raises(ConfigError, match="init_step"):
        Trainer(_cfg(tiny_model_dir, judged_stage1_run, "algo=ppo", f"init_from={src_dir}", "init_step=1",
                     "steps=2", "checkpoint.every=1", "candidates.loss=xent", "candidates.token_header=false"), out)
    # evaluation's loader rebuilds the warm-started run's policy from its own checkpoint
    loaded = pretrained_from_run(out)
    ids = jnp.asarray(batch["input_ids"][:1, :64])
    want, _ = trained(ids)
    got = loaded.logits(np.asarray(ids))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_updates_per_batch_matches_sft_and_ppo():
    sft = TrainConfig(algo="sft", updates_per_batch=2, lora=TrainConfig().lora)
    ppo = TrainConfig(algo="ppo", updates_per_batch=2)
    assert sft.updates_per_step == ppo.updates_per_step == 2
    assert TrainConfig(algo="sft").updates_per_step == 1
    assert TrainConfig(algo="ppo").updates_per_step == TrainConfig().ppo.ppo_epochs
    with pytest.raises(ValueError, match="reference=init needs init_from"):
        TrainConfig(reference="init")

