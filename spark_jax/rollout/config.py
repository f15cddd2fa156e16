"""The Stage 1 generation config and its hash (what a resumed run must agree on)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from spark_jax.core.config_io import to_dict
from spark_jax.rollout.rewards import RewardWeights
from spark_jax.rollout.selection import RULES

# Settings that change how records are produced but not which records (excluded from the hash).
UNHASHED = ("data", "concurrency", "tool_timeout_s", "progress")


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    data: str = ""  # JSONL/Parquet path or directory; "" -> $SPARK_MMLU_PRO, else the HF hub
    num_questions: int = 2500  # training questions rolled out
    heldout_per_category: int = 10  # evaluation questions kept out of training, per category
    seed: int = 0  # sampling seed
    steps: int = 5  # K: steps per question, the last one is the answer step
    selection: str = "lowest_viable"
    threshold: float = 6.0  # judge score (0-10) at or above which an action is viable
    rewards: RewardWeights = dataclasses.field(default_factory=RewardWeights)
    # Questions rolled out together in lockstep and written as one shard. Selection inside a
    # block follows the fixed (step, question) order, so records do not depend on timing.
    questions_per_shard: int = 8
    max_tokens_tool: int = 128  # generator budget for a tool argument
    max_tokens_thought: int = 256  # ... for a cot thought
    max_tokens_answer: int = 256  # ... for the final answer
    max_observation_chars: int = 2000  # tool output shown to the model is cut here
    stop_on_early_answer: bool = False  # end a trajectory (fewer than K records) once a thought answers
    concurrency: int = 8  # questions whose backend calls run at once (and local batch size)
    tool_timeout_s: float | None = None  # None: each tool's own default timeout
    progress: bool = True

    def __post_init__(self):
        if self.num_questions < 1:
            raise ValueError(f"num_questions must be >= 1, got {self.num_questions}")
        if self.heldout_per_category < 0:
            raise ValueError(f"heldout_per_category must be >= 0, got {self.heldout_per_category}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1 (the last step is the answer), got {self.steps}")
        if self.selection not in RULES:
            raise ValueError(f"selection {self.selection!r} is not one of {list(RULES)}")
        if not 0.0 <= self.threshold <= 10.0:
            raise ValueError(f"threshold must be within the judge's 0-10 scale, got {self.threshold}")
        for name in ("questions_per_shard", "max_tokens_tool", "max_tokens_thought", "max_tokens_answer",
                     "max_observation_chars", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tool_timeout_s is not None and self.tool_timeout_s <= 0:
            raise ValueError(f"tool_timeout_s must be > 0, got {self.tool_timeout_s}")


def hashed_settings(cfg: GenerateConfig, *, data_sha256: str, judge: str, generator: str) -> dict[str, Any]:
    """The flat settings that identify a run: config fields (minus UNHASHED), the data's
    content hash, and the judge's and generator's names (model identities)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            flat[prefix[:-1]] = value

    walk("", {k: v for k, v in to_dict(cfg).items() if k not in UNHASHED})
    flat.update({"data_sha256": data_sha256, "judge": judge, "generator": generator})
    return dict(sorted(flat.items()))


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for each setting that differs."""
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<absent>") != new.get(k, "<absent>"):
            out.append(f"{k}: {old.get(k, '<absent>')!r} (run) vs {new.get(k, '<absent>')!r} (now)")
    return out
