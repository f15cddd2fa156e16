import pytest

from spark_jax.core.config_io import ConfigError, load_config
from spark_jax.judge import JudgeConfig


def test_defaults_per_backend():
    assert JudgeConfig().backend == "local" and JudgeConfig().model == "embedded"
    assert JudgeConfig(backend="openai").model == "gpt-4o"


def test_cli_judge_default_is_the_config_default():
    import argparse

    from spark_jax.cli.generate import add_generate_args

    p = argparse.ArgumentParser()
    add_generate_args(p)
    assert p.parse_args(["--out", "x"]).judge == JudgeConfig().backend


@pytest.mark.parametrize("kw, message", [
    ({"backend": "anthropic"}, "backend"),
    ({"concurrency": 0}, "concurrency"),
    ({"max_retries": -1}, "max_retries"),
    ({"max_reasks": -1}, "max_reasks"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"max_cost_usd": -1.0}, "max_cost_usd"),
    ({"base_url": "127.0.0.1:8000/v1"}, "base_url"),
    ({"prices": {"gpt-4o": [2.5]}}, "prices"),
    ({"prices": {"gpt-4o": [2.5, -1]}}, "prices"),
    ({"backoff_base_s": -0.1}, "backoff_base_s"),
])
def test_invalid_values_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        JudgeConfig(**kw)


def test_loads_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "judge.yaml"
    path.write_text("backend: openai\nmodel: gpt-4o-mini\nconcurrency: 32\nprices:\n  my-model: [1, 2]\n")
    cfg = load_config(JudgeConfig, path, ["max_cost_usd=5", "base_url=http://127.0.0.1:8000/v1"])
    assert cfg.model == "gpt-4o-mini" and cfg.concurrency == 32 and cfg.max_cost_usd == 5.0
    assert cfg.prices == {"my-model": [1.0, 2.0]} and cfg.base_url == "http://127.0.0.1:8000/v1"
    with pytest.raises(ConfigError, match="concurrency"):
        load_config(JudgeConfig, overrides=["concurrency=0"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(JudgeConfig, overrides=["api_key=sk-123"])  # keys are never config values
