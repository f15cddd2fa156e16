"""``EndpointConfig``: one set of endpoint fields, checks and retry policy for judge and generator."""

from __future__ import annotations

import dataclasses

import pytest

from spark_jax.backends.endpoint_config import EndpointConfig
from spark_jax.judge.config import JudgeConfig
from spark_jax.rollout.generators import GeneratorConfig


def test_judge_and_generator_share_the_endpoint_fields():
    shared = {f.name for f in dataclasses.fields(EndpointConfig)}
    assert len(shared) == 11
    for cls in (JudgeConfig, GeneratorConfig):
        assert issubclass(cls, EndpointConfig) and shared <= {f.name for f in dataclasses.fields(cls)}
    # Each keeps its own timeout default: a generation may take longer than a judge's JSON reply.
    assert (JudgeConfig().timeout_s, GeneratorConfig().timeout_s) == (60.0, 120.0)


@pytest.mark.parametrize("cls, section", [(JudgeConfig, "judge"), (GeneratorConfig, "generator")])
@pytest.mark.parametrize("kw, field", [
    ({"temperature": -0.1}, "temperature"), ({"concurrency": 0}, "concurrency"),
    ({"max_retry_after_s": -1}, "max_retry_after_s"), ({"base_url": "localhost:1"}, "base_url"),
    ({"prices": {"m": [1, True]}}, r"prices\['m'\]"),
])
def test_errors_name_the_section_and_field(cls, section, kw, field):
    with pytest.raises(ValueError, match=rf"^{section}\.{field}"):
        cls(**kw)


def test_retry_policy_and_prices_come_from_the_shared_fields():
    cfg = GeneratorConfig(max_retries=2, backoff_base_s=0.1, backoff_max_s=3.0, max_retry_after_s=9.0,
                          prices={"m": (1, 2)})
    policy = cfg.retry_policy()
    assert (policy.max_retries, policy.base_delay_s, policy.max_delay_s, policy.max_retry_after_s) == (2, 0.1, 3.0, 9.0)
    assert cfg.prices == {"m": [1.0, 2.0]}
