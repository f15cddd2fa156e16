"""``JudgeConfig`` and ``build_judge``: what the Stage 1 driver uses to get a judge."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from spark_jax.backends.accounting import CostTracker
from spark_jax.backends.endpoint_config import check_common_fields
from spark_jax.backends.openai_client import API_KEY_ENV
from spark_jax.backends.retry import RetryPolicy


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
    # Deferred: a judge's backend (jax for local, openai for the API) loads only when it is built.
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
