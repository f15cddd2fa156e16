"""Loading HF directories: round trips, sharded checkpoints, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import spark_jax
from spark_jax.model.checkpoint_hf import export_hf, hf_name
from spark_jax.model.safetensors_io import CheckpointError, SafetensorsFile

IDS = np.random.default_rng(0).integers(0, 256, (2, 33)).astype(np.int32)


@pytest.fixture(scope="module")
def loaded(tiny_hf):
    return spark_jax.load_pretrained(tiny_hf[0])


def _copy(tiny_hf, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_hf[0], dst)
    return dst


def test_export_round_trip_loads_in_transformers(loaded, tmp_path):
    from transformers import LlamaForCausalLM

    out = export_hf(loaded.module, tmp_path / "export")
    with torch.no_grad():
        hf_logits = LlamaForCausalLM.from_pretrained(str(out)).eval()(torch.as_tensor(IDS, dtype=torch.long)).logits
    np.testing.assert_allclose(hf_logits.numpy(), loaded.logits(IDS), atol=1e-5, rtol=0)


def test_sharded_export_with_index_loads_back_identically(loaded, tmp_path):
    out = export_hf(loaded.module, tmp_path / "sharded", max_shard_bytes=40_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    again = spark_jax.load_pretrained(out)
    np.testing.assert_array_equal(again.logits(IDS), loaded.logits(IDS))


def test_bfloat16_export_and_load(loaded, tmp_path):
    out = export_hf(loaded.module, tmp_path / "bf16", dtype="bfloat16")
    assert SafetensorsFile(out / "model.safetensors").get("model.norm.weight").dtype.name == "bfloat16"
    again = spark_jax.load_pretrained(out, dtype="bfloat16")
    assert again.config.dtype == "bfloat16"
    np.testing.assert_allclose(again.logits(IDS), loaded.logits(IDS), atol=0.1)


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        spark_jax.load_pretrained(tmp_path / "nope")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        spark_jax.load_pretrained(tmp_path)


def test_unsupported_rope_type_names_file_and_key(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    cfg.pop("rope_parameters", None)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json.*rope_type 'yarn'"):
        spark_jax.load_pretrained(ckpt)


def test_shape_mismatch_names_tensor_and_file(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*mlp\.\w+_proj\.weight.*shape"):
        spark_jax.load_pretrained(ckpt)


def test_missing_shard_is_an_error_not_a_partial_load(loaded, tmp_path):
    out = export_hf(loaded.module, tmp_path / "sharded", max_shard_bytes=40_000)
    victim = sorted(out.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        spark_jax.load_pretrained(out)


def test_truncated_file_is_reported(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf, tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        spark_jax.load_pretrained(ckpt)


def test_fewer_layers_in_config_than_weights_is_refused(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf, tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"does not use: model\.layers\.1\."):
        spark_jax.load_pretrained(ckpt)


def test_missing_tensor_is_named(loaded, tmp_path):
    from spark_jax.model.safetensors_io import write_safetensors

    src = SafetensorsFile(export_hf(loaded.module, tmp_path / "full") / "model.safetensors")
    keep = [(k, src.shape(k), src.get(k).dtype) for k in src.keys() if k != "model.norm.weight"]
    ckpt = tmp_path / "partial"
    ckpt.mkdir()
    shutil.copy(tmp_path / "full" / "config.json", ckpt / "config.json")
    write_safetensors(ckpt / "model.safetensors", keep, src.get)
    with pytest.raises(CheckpointError, match=r"lacks tensor 'model\.norm\.weight'"):
        spark_jax.load_pretrained(ckpt)


def test_hf_names_cover_every_parameter(loaded):
    import jax
    from flax import nnx

    from spark_jax.model.sharding import path_str

    _, state = nnx.split(loaded.module, nnx.Param)
    names = {hf_name(path_str(p))[0] for p, _ in jax.tree_util.tree_leaves_with_path(state)}
    assert "model.layers.1.self_attn.k_proj.weight" in names and "lm_head.weight" in names
    assert len(names) == len(jax.tree_util.tree_leaves(state))
