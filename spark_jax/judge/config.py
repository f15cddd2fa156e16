"""``JudgeConfig`` and ``build_judge``: what the Stage 1 driver uses to get a judge."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Literal

from spark_jax.backends.accounting import CostTracker
from spark_jax.backends.openai_client import API_KEY_ENV
from spark_jax.backends.retry import RetryPolicy


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


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """How Stage 1 scores the candidate actions.

    backend "openai": ``model`` is the API model (default "gpt-4o"), ``base_url`` an
    OpenAI-compatible server (None = api.openai.com); the key is read from the environment
    variable named by ``api_key_env`` (never stored in configs). backend "local": ``model`` is
    a ``load_pretrained`` path (default "embedded", SmolLM2-135M-Instruct).
    """

    backend: Literal["openai", "local"] = "openai"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = API_KEY_ENV
    concurrency: int = 16
    max_retries: int = 6
    max_reasks: int = 2
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 300
    cache_dir: str | None = None
    max_cost_usd: float | None = None
    prices: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in ("openai", "local"):
            raise ValueError(f"judge backend must be 'openai' or 'local', got {self.backend!r}")
        if self.model is None:
            object.__setattr__(self, "model", "gpt-4o" if self.backend == "openai" else "embedded")
        if not self.model:
            raise ValueError("judge.model must not be empty")
        if self.max_reasks < 0:
            raise ValueError(f"judge.max_reasks must be >= 0, got {self.max_reasks}")
        if self.max_tokens < 1:
            raise ValueError(f"judge.max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"judge.temperature must be >= 0, got {self.temperature}")
        check_common_fields(self, "judge")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, base_delay_s=self.backoff_base_s,
                           max_delay_s=self.backoff_max_s, max_retry_after_s=self.max_retry_after_s)


def build_judge(cfg: JudgeConfig, local_model: Any = None, *, tracker: CostTracker | None = None):
    """The judge ``cfg`` describes.

    ``local_model`` (a PretrainedModel) is used by the local backend instead of loading
    ``cfg.model`` again. ``tracker`` shares one budget between judge and generator; without
    it the judge gets its own tracker with ``cfg.max_cost_usd``.
    """
    if cfg.backend == "local":
        from spark_jax.judge.local_judge import LocalJudge

        if local_model is None:
            from spark_jax.model.pretrained import load_pretrained

            local_model = load_pretrained(cfg.model)
        return LocalJudge(local_model, name=cfg.model)
    from spark_jax.judge.openai_judge import OpenAIJudge

    return OpenAIJudge(
        cfg.model, base_url=cfg.base_url, api_key=os.environ.get(cfg.api_key_env),
        concurrency=cfg.concurrency, max_reasks=cfg.max_reasks, timeout_s=cfg.timeout_s,
        cache_dir=cfg.cache_dir, prices={k: tuple(v) for k, v in cfg.prices.items()},
        temperature=cfg.temperature, max_tokens=cfg.max_tokens, retry=cfg.retry_policy(),
        tracker=tracker if tracker is not None else CostTracker(cfg.max_cost_usd),
    )
