"""Selection rules: which judged candidate action a step takes.

All rules are pure functions of the judge's scores, the usage counts so far and the fixed
candidate order (``spark_jax.tools.TOOL_NAMES``):

- ``lowest_viable`` (default; SPaRK's rarity-first rule, "selecting the lowest-scoring tool
  among those that pass the quality threshold"): among candidates scoring >= threshold, the
  lowest score; ties go to the action used least so far, then to the fixed order.
- ``least_used``: among viable candidates, the one used least so far; ties go to the higher
  score, then to the fixed order.
- ``greedy``: the highest score (the non-diverse baseline); ties go to the fixed order.

When no candidate is viable every rule takes the highest score (ties: fixed order), so a
step never runs an action the judge rated below the bar when a better one exists.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

RULES = ("lowest_viable", "least_used", "greedy")


class UsageCounts:
    """How often each action has been chosen so far in a run (judged steps only)."""

    def __init__(self, counts: Mapping[str, int] | None = None):
        self._counts: dict[str, int] = {}
        for name, n in (counts or {}).items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"usage count for {name!r} must be a non-negative integer, got {n!r}")
            if n:
                self._counts[name] = n

    def __getitem__(self, name: str) -> int:
        return self._counts.get(name, 0)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def share(self, name: str) -> float:
        """The fraction of all choices so far that were ``name`` (0 before any choice)."""
        total = self.total
        return self[name] / total if total else 0.0

    def add(self, name: str, n: int = 1) -> None:
        self._counts[name] = self[name] + n

    def update(self, names: Iterable[str]) -> None:
        for name in names:
            self.add(name)

    def copy(self) -> "UsageCounts":
        return UsageCounts(self._counts)

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UsageCounts) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"UsageCounts({self.to_dict()})"


def _order_index(order: Sequence[str]):
    pos = {name: i for i, name in enumerate(order)}
    return lambda name: (pos.get(name, len(pos)), name)


def select_action(
    scores: Mapping[str, float],
    rule: str,
    *,
    threshold: float,
    usage: UsageCounts,
    order: Sequence[str],
) -> str:
    """The action that ``rule`` picks from ``scores`` (action -> 0-10)."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(RULES)}")
    if not scores:
        raise ValueError("no candidate scores to select from")
    idx = _order_index(order)
    viable = [a for a, s in scores.items() if s >= threshold]
    if rule == "greedy" or not viable:
        return min(scores, key=lambda a: (-scores[a], idx(a)))
    if rule == "lowest_viable":
        return min(viable, key=lambda a: (scores[a], usage[a], idx(a)))
    return min(viable, key=lambda a: (usage[a], -scores[a], idx(a)))
