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


def test_base_config_is_merged_under_the_file(tmp_path):
    from spark_jax.rl.config import TrainConfig

    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("steps: 7\nbatch_size: 4\noptim:\n  lr: 0.5\n  warmup_steps: 3\n")
    (tmp_path / "hw.yaml").write_text("base_config: shared/base.yaml\nbatch_size: 8\noptim:\n  lr: 0.25\n")
    cfg = load_config(TrainConfig, tmp_path / "hw.yaml", ["steps=9"])
    assert (cfg.steps, cfg.batch_size, cfg.optim.lr, cfg.optim.warmup_steps) == (9, 8, 0.25, 3)


def test_base_config_errors_name_the_file(tmp_path):
    from spark_jax.rl.config import TrainConfig

    (tmp_path / "a.yaml").write_text("base_config: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base_config: a.yaml\n")
    with pytest.raises(ConfigError, match="base_config cycle"):
        load_config(TrainConfig, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base_config: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing.yaml.*the base_config of .*c.yaml"):
        load_config(TrainConfig, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base_config: 3\n")
    with pytest.raises(ConfigError, match="d.yaml: base_config must be a path"):
        load_config(TrainConfig, tmp_path / "d.yaml")


def test_a_partial_section_keeps_the_parents_defaults_for_the_rest(tmp_path):
    """TrainConfig's default LoRA is rank 16, alpha 32 (LoraConfig's own defaults are rank 0,
    alpha 16): `lora: {qlora: true}` or `lora.alpha=8` must change only what it names."""
    from spark_jax.rl.config import TrainConfig

    default = TrainConfig().lora
    (tmp_path / "q.yaml").write_text("lora: {qlora: true}\n")
    cfg = load_config(TrainConfig, tmp_path / "q.yaml")
    assert cfg.lora.qlora and (cfg.lora.rank, cfg.lora.alpha) == (default.rank, default.alpha)
    cfg = load_config(TrainConfig, None, ["lora.alpha=8"])
    assert (cfg.lora.rank, cfg.lora.alpha) == (default.rank, 8.0)


@pytest.mark.parametrize("path", sorted(__import__("glob").glob(str(
    __import__("pathlib").Path(__file__).parents[2] / "configs" / "llama3_1_8b_*.yaml"))))
def test_hardware_configs_inherit_the_shared_llama_settings(path):
    from spark_jax.core.config_io import read_yaml_config
    from spark_jax.rl.config import TrainConfig

    assert "base_config" in open(path).read()
    cfg = load_config(TrainConfig, path)
    assert cfg.model == "Llama-3.1-8B-Instruct" and cfg.dtype == "bfloat16" and cfg.remat
    assert cfg.lora.rank == 16 and cfg.hardware.device
    assert "model" not in __import__("yaml").safe_load(open(path))  # only what differs from the base
    assert read_yaml_config(path)["model"] == "Llama-3.1-8B-Instruct"
