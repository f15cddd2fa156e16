"""Architecture configs: presets, HF conversion and validation."""

from __future__ import annotations

import pytest

from spark_jax.model.config import LlamaConfig, llama3_1_8b, llama3_2_1b, preset, smollm2_135m, tiny


def test_preset_parameter_counts():
    assert abs(llama3_1_8b().num_params() - 8.03e9) < 0.01e9
    assert abs(llama3_2_1b().num_params() - 1.236e9) < 0.01e9
    assert abs(smollm2_135m().num_params() - 134.5e6) < 0.5e6


def test_hf_round_trip_keeps_rope_scaling():
    for cfg in (llama3_1_8b(), smollm2_135m(), tiny()):
        assert LlamaConfig.from_hf(cfg.to_hf()) == cfg


def test_transformers_5_rope_parameters_layout():
    hf = llama3_1_8b().to_hf()
    scaling = hf.pop("rope_scaling")
    hf["rope_parameters"] = {**scaling, "rope_theta": hf.pop("rope_theta")}
    assert LlamaConfig.from_hf(hf) == llama3_1_8b()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type 'dynamic'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks key 'low_freq_factor'"),
        ({"model_type": "mistral"}, "model_type 'mistral'"),
        ({"num_key_value_heads": 3}, "multiple of num_kv_heads"),
    ],
)
def test_bad_hf_configs_name_source(change, message):
    hf = {**tiny().to_hf(), **change}
    with pytest.raises(ValueError, match=message):
        LlamaConfig.from_hf(hf, source="x/config.json")


def test_unknown_preset_and_dtype():
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("gpt2")
    with pytest.raises(ValueError, match="param_dtype"):
        tiny(param_dtype="float8")
