"""Fixtures of the rl tests: a Stage 1 run whose tool and cot steps hold the judge's scores of
all nine candidates."""

from __future__ import annotations

import random

import pytest

from spark_jax.protocol.prompts import candidate_actions
from tests.conftest import synthetic_records, write_run_dir


def judged_records(n: int, seed: int = 0) -> list[dict]:
    """``synthetic_records`` with a 0-10 score for every candidate at every non-answer step."""
    rng = random.Random(seed)
    records = synthetic_records(n, seed=seed)
    for rec in records:
        if rec["selected"] != "answer":
            rec["candidates"] = [{"action": a, "score": float(rng.randint(0, 10))} for a in candidate_actions()]
    return records


@pytest.fixture(scope="session")
def judged_stage1_run(tmp_path_factory):
    return write_run_dir(tmp_path_factory.mktemp("stage1_judged"), judged_records(40))
