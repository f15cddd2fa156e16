"""Dataclass configs from YAML files plus ``key=value`` overrides.

Every config in spark-jax is a (possibly nested) dataclass that validates itself in
``__post_init__``. This module only moves values in: it refuses unknown keys (naming the
file and the dotted key), parses override values with YAML rules (``lr=3e-4`` is a float,
``remat=true`` a bool) and coerces them to the field's declared type.
"""

from __future__ import annotations

import dataclasses
import pathlib
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be turned into a valid config."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: null is not allowed (expected {tp})")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _nested_defaults(cls: type) -> dict[str, Any]:
    """The dataclass-valued defaults of ``cls``'s fields (its sections), by field name."""
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            out[f.name] = default
    return out


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; known keys: {sorted(types_)}"
        )
    defaults = _nested_defaults(cls)
    kwargs = {}
    for k, v in data.items():
        if k in defaults and isinstance(v, Mapping):
            # A partial section (`lora: {qlora: true}`) changes only what it names of the parent's
            # default section (TrainConfig's LoRA rank 16), not of the section class's own defaults.
            v = _deep_merge(to_dict(defaults[k]), v)
        kwargs[k] = _coerce(v, types_[k], f"{where}.{k}" if where else k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return tree


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as plain YAML-serialisable data."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


BASE_KEY = "base_config"


def read_yaml_config(path: str | pathlib.Path, _seen: tuple[pathlib.Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML config file, with its ``base_config:`` (a path relative to the file)
    merged underneath, recursively: a file holds only what differs from its base."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}" + (f" (the {BASE_KEY} of {_seen[-1]})" if _seen else ""))
    if p.resolve() in _seen:
        raise ConfigError(f"{p}: {BASE_KEY} cycle: {' -> '.join(map(str, _seen + (p.resolve(),)))}")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
    loaded = dict(loaded)
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return loaded
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: {BASE_KEY} must be a path to another YAML config, got {base!r}")
    return _deep_merge(read_yaml_config(p.parent / base, _seen + (p.resolve(),)), loaded)


def load_config(
    cls: type[T],
    path: str | pathlib.Path | None = None,
    overrides: Sequence[str] = (),
    base: T | Mapping[str, Any] | None = None,
) -> T:
    """Builds ``cls`` from ``base``, then the YAML file at ``path``, then ``overrides``."""
    data: dict[str, Any] = {}
    if base is not None:
        data = to_dict(base) if dataclasses.is_dataclass(base) else dict(base)
    where = cls.__name__
    if path is not None:
        data = _deep_merge(data, read_yaml_config(path))
        where = str(path)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
        where = f"{where} (+ overrides)"
    return _build(cls, data, where)
