"""fit_to_memory: grad_accum raised to the smallest divisor of batch_size that fits, else PlanError."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from spark_jax.core.config_io import load_config
from spark_jax.model.config import preset, tiny
from spark_jax.plan.fit import PlanError, fit_to_memory
from spark_jax.plan.memory import FULL_KL_BUFFERS, USABLE_FRACTION, plan_memory
from spark_jax.rl.config import TrainConfig

TINY = pathlib.Path(__file__).parents[2] / "configs" / "tiny.yaml"


def _peak(cfg, arch, grad_accum):
    return plan_memory(dataclasses.replace(cfg, grad_accum=grad_accum), arch).peak


def test_default_config_on_a_24_gb_cpu_gets_the_smallest_grad_accum_that_fits():
    cfg = TrainConfig()  # model "embedded": SmolLM2-135M, resolved without loading weights
    arch = preset("smollm2_135m")
    res = fit_to_memory(cfg, device="cpu", memory_gb=24)
    budget = 24e9 * USABLE_FRACTION
    accum = res.cfg.grad_accum
    assert res.changed and accum > cfg.grad_accum and cfg.batch_size % accum == 0
    assert res.budget == budget and res.device == "cpu"
    assert res.peak == _peak(cfg, arch, accum) <= budget < res.peak_before == _peak(cfg, arch, 1)
    smaller = [n for n in range(1, accum) if cfg.batch_size % n == 0]
    assert all(_peak(cfg, arch, n) > budget for n in smaller)  # the first divisor that fits
    assert dataclasses.replace(res.cfg, grad_accum=cfg.grad_accum) == cfg  # nothing else changed
    assert f"grad_accum 1 -> {accum}" in res.message and "\n" not in res.message
    assert f"{res.peak_before / 1e9:.2f} GB" in res.message and f"{budget / 1e9:.2f} GB usable" in res.message


def test_a_config_that_fits_is_returned_unchanged():
    cfg = load_config(TrainConfig, TINY)
    res = fit_to_memory(cfg, arch=tiny(), device="cpu", memory_gb=24)
    assert res.cfg is cfg and not res.changed and res.peak == res.peak_before == plan_memory(cfg, tiny()).peak
    assert "fits" in res.message and f"grad_accum {cfg.grad_accum}" in res.message


def test_a_configured_grad_accum_is_only_raised_when_needed():
    cfg = load_config(TrainConfig, TINY)  # batch_size 4, grad_accum 2 (set in the file)
    arch = tiny()
    assert (cfg.batch_size, cfg.grad_accum) == (4, 2)
    between = (_peak(cfg, arch, 2) + _peak(cfg, arch, 4)) / 2  # fits at 4, not at 2
    res = fit_to_memory(cfg, arch=arch, device="cpu", memory_gb=between / 1e9 / USABLE_FRACTION)
    assert res.cfg.grad_accum == 4 and "grad_accum 2 (as configured) -> 4" in res.message
    roomy = fit_to_memory(cfg, arch=arch, device="cpu", memory_gb=_peak(cfg, arch, 2) / 1e9 / USABLE_FRACTION * 1.01)
    assert roomy.cfg is cfg  # fits as configured: not touched (never lowered either)


@pytest.mark.parametrize("memory_gb, overrides", [
    (0.001, []),                        # nothing fits in 1 MB
    (24, ["seq_buckets=[65536]"]),      # attention scores of 64k tokens, even one row at a time
])
def test_a_config_that_cannot_fit_raises_with_the_planners_advice(memory_gb, overrides):
    cfg = load_config(TrainConfig, TINY, overrides)
    arch = tiny() if not overrides else preset("smollm2_135m")
    with pytest.raises(PlanError) as e:
        fit_to_memory(cfg, arch=arch, device="cpu", memory_gb=memory_gb)
    assert e.value.advice and all(a in str(e.value) for a in e.value.advice)
    assert "does NOT fit even with grad_accum=4" in str(e.value)


def test_the_device_budget_comes_from_the_config_when_not_given():
    cfg = load_config(TrainConfig, TINY, ["hardware.device=cpu", "hardware.device_memory_gb=0.001"])
    with pytest.raises(PlanError):
        fit_to_memory(cfg, arch=tiny())
    with pytest.raises(ValueError, match="cannot tell the architecture"):
        fit_to_memory(dataclasses.replace(cfg, model="/no/such/odd-model"))


def test_full_kl_keeps_the_reference_log_softmax_of_the_whole_batch():
    cfg = load_config(TrainConfig, TINY, ["seq_buckets=[64,1024]", "action_buckets=[32,128]"])
    full = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, kl_estimator="full"))
    k3 = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, kl_estimator="k3"))
    arch = tiny()
    plan_full, plan_k3 = plan_memory(full, arch), plan_memory(k3, arch)
    for seq, bf, bk in zip((64, 1024), plan_full.buckets, plan_k3.buckets):
        # the whole batch (4 rows, not the micro-batch of 2), A = min(128, seq) positions, float32
        assert bf.reference_logprobs == 4 * min(128, seq) * arch.vocab_size * 4
        assert bk.reference_logprobs == 0
        # + the exact KL's softmax, difference and reference slice per micro-batch row (2 rows)
        assert bf.activations - bk.activations == 2 * min(128, seq) * arch.vocab_size * 4 * FULL_KL_BUFFERS
        assert bf.total - bk.total == bf.reference_logprobs + bf.activations - bk.activations
    sft = plan_memory(dataclasses.replace(full, algo="sft"), arch).buckets[-1]
    assert sft.reference_logprobs == plan_full.buckets[-1].reference_logprobs  # SFT's KL metric needs it too
    assert sft.activations == plan_memory(dataclasses.replace(k3, algo="sft"), arch).buckets[-1].activations
    split = plan_memory(dataclasses.replace(full, mesh_shape=(1, 2, 2)), arch).buckets[-1]
    assert split.reference_logprobs == 2 * 128 * (arch.vocab_size / 2) * 4  # rows over fsdp, vocab over tensor


def test_micro_batches_keep_splitting_over_the_batch_axes():
    cfg = load_config(TrainConfig, TINY, ["batch_size=8", "grad_accum=1", "mesh_shape=[1,4,1]"])
    arch = tiny()
    # grad_accum 4 or 8 would leave micro-batches of 2 or 1 rows for 4 devices (replicated, no gain)
    with pytest.raises(PlanError, match="even with grad_accum=2 "):
        fit_to_memory(cfg, arch=arch, device="cpu", memory_gb=_peak(cfg, arch, 2) * 0.99 / 1e9 / USABLE_FRACTION)


def test_cpu_training_plans_with_the_memory_available_now(monkeypatch):
    """On a shared host the run gets what is free, not the physical RAM."""
    from spark_jax.core.config_io import load_config
    from spark_jax.model.config import tiny
    from spark_jax.plan import devices, fit

    monkeypatch.setattr(devices, "host_memory_gb", lambda: 24.0)
    monkeypatch.setattr(devices, "available_host_memory_gb", lambda: 0.001)
    cfg = load_config(TrainConfig, TINY, ["hardware.device=cpu"])
    with pytest.raises(fit.PlanError, match="0.001 GB"):
        fit.fit_to_memory(cfg, arch=tiny())
    assert fit.fit_to_memory(cfg, arch=tiny(), memory_gb=24.0).cfg.grad_accum == cfg.grad_accum  # given: used
