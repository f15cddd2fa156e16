"""``EndpointConfig``: the fields a judge config and a generator config share to reach an
OpenAI-compatible endpoint (URL, key variable, concurrency, retries, timeouts, cost budget,
prices), their validation and the retry policy they give."""

from __future__ import annotations

import dataclasses
import math

from spark_jax.backends.openai_client import API_KEY_ENV
from spark_jax.backends.retry import RetryPolicy


@dataclasses.dataclass(frozen=True)
class EndpointConfig:
    """Base of ``JudgeConfig`` and ``GeneratorConfig``; subclasses call ``check_endpoint(what)``
    from ``__post_init__`` so errors name their section ("judge.concurrency ...").

    ``base_url`` None means api.openai.com; the key is read from the environment variable named
    by ``api_key_env`` (never stored in configs). ``prices``: model -> [input, output] USD per
    million tokens; ``max_cost_usd`` stops the run once spent.
    """

    base_url: str | None = None
    api_key_env: str = API_KEY_ENV
    temperature: float = 0.0
    concurrency: int = 16
    max_retries: int = 6
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    max_cost_usd: float | None = None
    prices: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def check_endpoint(self, what: str) -> None:
        """Validates the shared fields (and normalises ``prices``); errors start with ``what``."""
        if self.temperature < 0:
            raise ValueError(f"{what}.temperature must be >= 0, got {self.temperature}")
        if self.concurrency < 1:
            raise ValueError(f"{what}.concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"{what}.max_retries must be >= 0, got {self.max_retries}")
        if not self.timeout_s > 0:
            raise ValueError(f"{what}.timeout_s must be > 0, got {self.timeout_s}")
        for field in ("backoff_base_s", "backoff_max_s", "max_retry_after_s"):
            if getattr(self, field) < 0:
                raise ValueError(f"{what}.{field} must be >= 0, got {getattr(self, field)}")
        if self.max_cost_usd is not None and not (self.max_cost_usd >= 0 and math.isfinite(self.max_cost_usd)):
            raise ValueError(f"{what}.max_cost_usd must be a finite number >= 0, got {self.max_cost_usd}")
        if self.base_url is not None and not str(self.base_url).startswith(("http://", "https://")):
            raise ValueError(f"{what}.base_url must start with http:// or https://, got {self.base_url!r}")
        if not isinstance(self.prices, dict):
            raise ValueError(f"{what}.prices must map model -> [input_usd_per_1m, output_usd_per_1m], "
                             f"got {self.prices!r}")
        prices = {}
        for model, pair in self.prices.items():
            ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in pair))
            if not ok:
                raise ValueError(f"{what}.prices[{model!r}] must be [input_usd_per_1m, output_usd_per_1m] "
                                 f"(two numbers >= 0), got {pair!r}")
            prices[str(model)] = [float(pair[0]), float(pair[1])]
        object.__setattr__(self, "prices", prices)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, base_delay_s=self.backoff_base_s,
                           max_delay_s=self.backoff_max_s, max_retry_after_s=self.max_retry_after_s)
