"""Token and cost accounting: a per-model price table, a budget, and the counters a progress
bar shows (calls, cache hits, retries, re-asks, failures, tokens, cost)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Mapping

log = logging.getLogger(__name__)

# USD per 1M tokens (input, output); OpenAI's list prices for the models the paper setup uses.
DEFAULT_PRICES_PER_1M: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
}

_warned_unknown: set[str] = set()
_warn_lock = threading.Lock()


class BudgetExceeded(RuntimeError):
    """Raised instead of starting a paid call once the spend reached ``max_cost_usd``."""


def lookup_price(model: str, overrides: Mapping[str, tuple[float, float]] | None = None
                 ) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for ``model``, or None if unknown.

    Overrides win over the defaults. A dated snapshot ("gpt-4o-2024-08-06") takes the price
    of its longest listed prefix followed by "-" ("gpt-4o"), so "gpt-4o-mini-..." is never
    priced as "gpt-4o".
    """
    table = {**DEFAULT_PRICES_PER_1M, **dict(overrides or {})}
    if model in table:
        return tuple(table[model])  # type: ignore[return-value]
    prefixes = [name for name in table if model.startswith(name + "-")]
    if prefixes:
        return tuple(table[max(prefixes, key=len)])  # type: ignore[return-value]
    return None


class Pricer:
    """Cost of a call to one model; unknown models cost 0 with a single warning per model."""

    def __init__(self, model: str, overrides: Mapping[str, tuple[float, float]] | None = None):
        self.model = model
        self.price = lookup_price(model, overrides)
        if self.price is None:
            with _warn_lock:
                if model not in _warned_unknown:
                    _warned_unknown.add(model)
                    log.warning(
                        "no price known for model %r: its calls are counted as costing $0 "
                        "(set prices: {%r: [input_usd_per_1m, output_usd_per_1m]} to fix)",
                        model, model,
                    )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (prompt_tokens * self.price[0] + completion_tokens * self.price[1]) / 1e6


class CostTracker:
    """Money spent so far against an optional budget; share one between judge and generator."""

    def __init__(self, max_cost_usd: float | None = None):
        if max_cost_usd is not None and max_cost_usd < 0:
            raise ValueError(f"max_cost_usd must be >= 0, got {max_cost_usd}")
        self.max_cost_usd = max_cost_usd
        self.spent_usd = 0.0
        self._lock = threading.Lock()

    @property
    def exhausted(self) -> bool:
        return self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd

    def check(self) -> None:
        """Raises :class:`BudgetExceeded` when no new paid call may start."""
        if self.exhausted:
            raise BudgetExceeded(
                f"cost budget reached: spent ${self.spent_usd:.4f} of max_cost_usd=${self.max_cost_usd:.4f}"
            )

    def add(self, usd: float) -> None:
        with self._lock:
            self.spent_usd += usd


@dataclasses.dataclass
class BackendStats:
    """Counters of one backend since it was built (read them for the progress bar)."""

    calls: int = 0  # score()/complete() calls that went to the backend (not served by the cache)
    cache_hits: int = 0
    requests: int = 0  # HTTP requests sent, retries and re-asks included
    retries: int = 0
    reasks: int = 0  # extra requests after a malformed or out-of-range reply
    failures: int = 0  # calls that ended in ok=False / an error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)
