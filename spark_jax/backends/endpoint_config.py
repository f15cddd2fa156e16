"""Validation of the API fields that judge and generator configs share (concurrency, retries,
timeouts, cost budget, base URL, prices)."""

from __future__ import annotations

import math
from typing import Any


def check_common_fields(cfg: Any, what: str) -> None:
    """Validates (and normalises ``prices`` of) the API fields shared by judge and generator configs."""
    if cfg.concurrency < 1:
        raise ValueError(f"{what}.concurrency must be >= 1, got {cfg.concurrency}")
    if cfg.max_retries < 0:
        raise ValueError(f"{what}.max_retries must be >= 0, got {cfg.max_retries}")
    if not cfg.timeout_s > 0:
        raise ValueError(f"{what}.timeout_s must be > 0, got {cfg.timeout_s}")
    for field in ("backoff_base_s", "backoff_max_s", "max_retry_after_s"):
        if getattr(cfg, field) < 0:
            raise ValueError(f"{what}.{field} must be >= 0, got {getattr(cfg, field)}")
    if cfg.max_cost_usd is not None and not (cfg.max_cost_usd >= 0 and math.isfinite(cfg.max_cost_usd)):
        raise ValueError(f"{what}.max_cost_usd must be a finite number >= 0, got {cfg.max_cost_usd}")
    if cfg.base_url is not None and not str(cfg.base_url).startswith(("http://", "https://")):
        raise ValueError(f"{what}.base_url must start with http:// or https://, got {cfg.base_url!r}")
    if not isinstance(cfg.prices, dict):
        raise ValueError(f"{what}.prices must map model -> [input_usd_per_1m, output_usd_per_1m], got {cfg.prices!r}")
    prices = {}
    for model, pair in cfg.prices.items():
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in pair))
        if not ok:
            raise ValueError(
                f"{what}.prices[{model!r}] must be [input_usd_per_1m, output_usd_per_1m] (two numbers >= 0), got {pair!r}"
            )
        prices[str(model)] = [float(pair[0]), float(pair[1])]
    object.__setattr__(cfg, "prices", prices)
