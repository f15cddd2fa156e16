"""``JudgeConfig`` and ``build_judge``: what the Stage 1 driver uses to get a judge."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from spark_jax.backends.accounting import CostTracker
from spark_jax.backends.endpoint_config import EndpointConfig


# The default backend runs on the user's machine without an API key or network (the embedded model).
DEFAULT_BACKEND = "local"
BACKENDS = ("openai", "local")


@dataclasses.dataclass(frozen=True)
class JudgeConfig(EndpointConfig):
    """How Stage 1 scores the candidate actions (endpoint fields: ``EndpointConfig``).

    backend "local" (default): ``model`` is a ``load_pretrained`` path (default "embedded",
    SmolLM2-135M-Instruct). backend "openai": ``model`` is the API model (default "gpt-4o"),
    ``base_url`` an OpenAI-compatible server (None = api.openai.com).
    """

    backend: Literal["local", "openai"] = DEFAULT_BACKEND
    model: str | None = None
    max_reasks: int = 2
    max_tokens: int = 300
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"judge backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.model is None:
            object.__setattr__(self, "model", "gpt-4o" if self.backend == "openai" else "embedded")
        if not self.model:
            raise ValueError("judge.model must not be empty")
        if self.max_reasks < 0:
            raise ValueError(f"judge.max_reasks must be >= 0, got {self.max_reasks}")
        if self.max_tokens < 1:
            raise ValueError(f"judge.max_tokens must be >= 1, got {self.max_tokens}")
        self.check_endpoint("judge")


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
