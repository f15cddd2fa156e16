"""Per-step rewards: judged quality, rarity of the chosen action, and the final outcome.

    r_t = w_quality * score_t / 10 + w_diversity * rarity(a_t) + w_outcome * correct   (last step)

``rarity(a) = 1 - share(a)``, with ``share`` the fraction of all judged choices made in the
run *before* this one that were ``a`` (rarity 1 before any choice). The final answer step is
not judged, so its quality and diversity parts are 0 and its reward is the outcome part.
Each weighted part is stored in the record's ``reward_components``.
"""

from __future__ import annotations

import dataclasses
import math

from spark_jax.rollout.selection import UsageCounts


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    quality: float = 1.0
    diversity: float = 0.5
    outcome: float = 1.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"reward weight {f.name} must be a finite number, got {v!r}")


def rarity(action: str, usage: UsageCounts) -> float:
    """1 - the action's share of the choices so far, in [0, 1]."""
    return 1.0 - usage.share(action)


def step_reward(
    *, score: float | None, rarity_value: float | None, correct: bool | None, weights: RewardWeights
) -> tuple[float, dict[str, float]]:
    """(r_t, its weighted components). ``score`` in 0-10 or None (unjudged answer step);
    ``correct`` None except on the final answer step."""
    quality = 0.0 if score is None else weights.quality * float(score) / 10.0
    diversity = 0.0 if rarity_value is None else weights.diversity * float(rarity_value)
    outcome = 0.0 if correct is None else weights.outcome * float(bool(correct))
    components = {"quality": quality, "diversity": diversity, "outcome": outcome}
    return quality + diversity + outcome, components
