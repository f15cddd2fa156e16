"""Fit a TrainConfig to the device's memory before anything compiles: when the planned peak
(``plan_memory``, bytes per device) exceeds the usable budget, raise ``grad_accum`` (smaller
micro-batches, same optimizer batch) to the smallest divisor of ``batch_size`` that fits.
Nothing else in the config changes. GB = 1e9 bytes."""

from __future__ import annotations

import dataclasses

from spark_jax.model.config import LlamaConfig
from spark_jax.plan import devices
from spark_jax.plan.advice import resolve_arch, resolve_device, suggestions
from spark_jax.plan.memory import USABLE_FRACTION, plan_memory
from spark_jax.rl.config import TrainConfig


class PlanError(ValueError):
    """No grad_accum makes the config fit; ``advice`` lists what would (from ``suggestions``)."""

    def __init__(self, message: str, advice: list[str]):
        super().__init__(message)
        self.advice = advice


@dataclasses.dataclass(frozen=True)
class FitResult:
    cfg: TrainConfig        # the input config, or a copy with a larger grad_accum
    changed: bool
    message: str            # one line: what changed (or that it fits), peaks and budget
    peak: float             # planned peak bytes per device of ``cfg``
    peak_before: float      # ... of the input config
    budget: float           # usable bytes per device
    device: str
    memory_gb: float


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f} GB"


def _rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def memory_gb_given(cfg: TrainConfig, memory_gb: float | None) -> bool:
    return bool(memory_gb or cfg.hardware.device_memory_gb)


def fit_to_memory(cfg: TrainConfig, *, device: str | None = None, memory_gb: float | None = None,
                  arch: LlamaConfig | None = None, grad_accum_set: bool | None = None) -> FitResult:
    """``cfg`` with the smallest grad_accum (>= the configured one, dividing batch_size into
    micro-batches that split over the mesh's data x fsdp axes) whose planned peak fits
    ``USABLE_FRACTION`` of the device's memory; raises ``PlanError`` when even the largest does not.

    arch: the architecture (default: ``resolve_arch(cfg.model)``, which raises ValueError for a
    model it cannot tell). device / memory_gb: as ``spark-jax plan`` (default: the config's
    ``hardware``, else the device jax sees; on CPU the host's RAM available now, since the run
    shares it with everything else on the machine). grad_accum_set: whether the
    user chose grad_accum (None: it differs from TrainConfig's default); only worded in messages.
    """
    memory_gb_arg = memory_gb
    arch = arch if arch is not None else resolve_arch(cfg.model, None)
    device, memory_gb = resolve_device(cfg, device, memory_gb)
    if device == "cpu" and not memory_gb_given(cfg, memory_gb_arg):
        # training here and now: the host's RAM is shared with whatever else runs, so plan with what is free
        memory_gb = devices.available_host_memory_gb()
    budget = memory_gb * 1e9 * USABLE_FRACTION
    where = f"{_gb(budget)} usable per device on {device} ({USABLE_FRACTION:.0%} of {memory_gb:.4g} GB)"
    before = plan_memory(cfg, arch, device).peak

    def result(new: TrainConfig, peak: float, message: str) -> FitResult:
        return FitResult(new, new is not cfg, message, peak, before, budget, device, memory_gb)

    if before <= budget:
        return result(cfg, before, f"memory plan: fits: peak {_gb(before)} of {where} "
                                   f"(batch_size {cfg.batch_size}, grad_accum {cfg.grad_accum})")
    if grad_accum_set is None:
        grad_accum_set = cfg.grad_accum != TrainConfig.grad_accum
    was = f"{cfg.grad_accum} (as configured)" if grad_accum_set else str(cfg.grad_accum)
    bs = cfg.batch_size
    # micro-batches keep splitting over the batch axes (data x fsdp), so every device keeps rows
    ways = cfg.mesh_shape[0] * cfg.mesh_shape[1]
    candidates = [n for n in range(cfg.grad_accum + 1, bs + 1) if bs % n == 0 and (bs // n) % ways == 0]
    for accum in candidates:
        new = dataclasses.replace(cfg, grad_accum=accum)
        peak = plan_memory(new, arch, device).peak
        if peak <= budget:
            return result(new, peak, (
                f"memory plan: grad_accum {was} -> {accum} (micro-batches of {_rows(bs // accum)}, batch_size "
                f"{bs} unchanged): planned peak {_gb(before)} exceeds {where}; {_gb(peak)} at grad_accum "
                f"{accum}"))
    worst = dataclasses.replace(cfg, grad_accum=candidates[-1]) if candidates else cfg
    peak = plan_memory(worst, arch, device).peak
    advice = suggestions(worst, arch, budget, device)
    most = worst.grad_accum
    with_accum = "" if worst is cfg else f" (with grad_accum={most})"
    raise PlanError(
        f"memory plan: does NOT fit even with grad_accum={most} (micro-batches of {_rows(bs // most)}): planned peak "
        f"{_gb(peak)} (at grad_accum {cfg.grad_accum}: {_gb(before)}) exceeds {where}. Change{with_accum}: "
        + ("; or ".join(advice) if advice else "a device with more memory, or more devices"), advice)
