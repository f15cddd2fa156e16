"""config_io: numbers in scientific notation without a dot (YAML 1.1 reads them as strings)."""

import dataclasses

import pytest

from spark_jax.config_io import ConfigError, load_config


@dataclasses.dataclass(frozen=True)
class _Cfg:
    lr: float = 1.0


def test_scientific_notation_override_is_a_float():
    assert load_config(_Cfg, overrides=["lr=2e-4"]).lr == 2e-4
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(_Cfg, overrides=["lr=fast"])
