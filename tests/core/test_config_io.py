"""YAML + key=value configs: coercion, nesting, and errors that name the key and file."""

from __future__ import annotations

import dataclasses

import pytest

from spark_jax.core.config_io import ConfigError, load_config, parse_overrides


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    names: tuple[str, ...] = ("a",)


@dataclasses.dataclass(frozen=True)
class Outer:
    steps: int = 10
    flag: bool = False
    label: str | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\ninner:\n  rate: 0.5\n")
    cfg = load_config(Outer, f, ["inner.rate=3e-4", "flag=true", "inner.names=x,y"])
    assert cfg == Outer(steps=5, flag=True, inner=Inner(rate=3e-4, names=("x", "y")))


def test_unknown_key_names_file_and_known_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stpes: 5\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key\(s\) \['stpes'\].*steps"):
        load_config(Outer, f)


def test_wrong_type_names_dotted_key():
    with pytest.raises(ConfigError, match=r"inner\.rate: expected a number"):
        load_config(Outer, None, ["inner.rate=fast"])


def test_validation_error_is_a_config_error():
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        load_config(Outer, None, ["steps=0"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, "/nonexistent/x.yaml")
