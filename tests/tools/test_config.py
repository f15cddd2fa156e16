import dataclasses

import pytest

from spark_jax.tools.config import RENAMED, ToolsConfig


def test_every_old_sandbox_name_still_sets_its_new_field():
    values = {"python_memory_mb": 512, "python_disk_mb": 8, "python_max_processes": 4,
              "python_max_open_files": 32, "python_capture_bytes": 5000, "prefork": False}
    assert set(values) == set(RENAMED)
    for old, value in values.items():
        with pytest.warns(DeprecationWarning, match=f"ToolsConfig.{old} is now {RENAMED[old]}"):
            config = ToolsConfig(**{old: value})
        assert getattr(config, RENAMED[old]) == value
        others = {new: getattr(config, new) for new in RENAMED.values() if new != RENAMED[old]}
        assert others == {new: getattr(ToolsConfig(), new) for new in others}


def test_old_names_are_not_stored_and_survive_replace_and_asdict():
    with pytest.warns(DeprecationWarning):
        config = ToolsConfig(python_memory_mb=512)
    d = dataclasses.asdict(config)
    assert d["sandbox_memory_mb"] == 512 and not set(RENAMED) & set(d)
    assert ToolsConfig(**d) == config  # how the tool worker rebuilds it
    assert dataclasses.replace(config, sandbox_disk_mb=8).sandbox_memory_mb == 512


def test_old_and_new_name_with_different_values_is_refused():
    with pytest.raises(ValueError, match="python_memory_mb=512 and sandbox_memory_mb=256 both given"):
        ToolsConfig(python_memory_mb=512, sandbox_memory_mb=256)


def test_an_old_name_is_validated_like_the_new_one():
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="sandbox_memory_mb must be"):
        ToolsConfig(python_memory_mb=1)
