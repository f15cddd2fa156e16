"""The shipped training configs (configs/*.yaml) load, and each holds only what differs from its
base: TrainConfig's defaults, or the file named in ``base_config:``."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from spark_jax.core.config_io import BASE_KEY, load_config, to_dict
from spark_jax.rl.config import TrainConfig

CONFIGS = sorted((pathlib.Path(__file__).parents[2] / "configs").glob("*.yaml"))


def _leaves(d: dict, prefix: tuple = ()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,)


def _get(d: dict, path: tuple):
    for k in path:
        d = d[k]
    return d


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_restates_nothing_of_its_base(path):
    raw = yaml.safe_load(path.read_text())
    base_name = raw.pop(BASE_KEY, None)
    base = to_dict(load_config(TrainConfig, path.parent / base_name) if base_name else TrainConfig())
    merged = to_dict(load_config(TrainConfig, path))
    restated = [".".join(key) for key in _leaves(raw) if _get(merged, key) == _get(base, key)]
    assert not restated, f"{path.name} restates its base's value for {restated}"


def test_the_check_catches_a_restated_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"grad_accum: 2\nseed: {TrainConfig().seed}\n")
    with pytest.raises(AssertionError, match=r"restates its base's value for \['seed'\]"):
        test_config_restates_nothing_of_its_base(path)
