"""Hugging Face checkpoints: load a safetensors directory or a GGUF file, export safetensors.

Loading fills the parameters of an abstract (``nnx.eval_shape``) model tensor by tensor;
with a mesh each device reads only its own slice of the memory-mapped tensor, so the host
never holds the whole model twice. Every tensor is checked against the config, and every
tensor in the checkpoint must be used: a partial load is an error, never a silent success.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from spark_jax.core.cache import cache_root
from spark_jax.model import gguf_io
from spark_jax.model.config import LlamaConfig
from spark_jax.model.factory import abstract_model
from spark_jax.model.llama import Llama
from spark_jax.model.safetensors_io import CheckpointError, SafetensorsFile, write_safetensors
from spark_jax.model.sharding import param_sharding, path_str

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def hf_name(path: str) -> tuple[str, bool]:
    """Our parameter path -> (transformers tensor name, whether the kernel is stored transposed)."""
    if path == "embed_tokens/embedding":
        return "model.embed_tokens.weight", False
    if path == "norm/weight":
        return "model.norm.weight", False
    if path == "lm_head/kernel":
        return "lm_head.weight", True
    m = re.fullmatch(r"layers/(\d+)/(self_attn|mlp)/(\w+_proj)/kernel", path)
    if m:
        return f"model.layers.{m[1]}.{m[2]}.{m[3]}.weight", True
    m = re.fullmatch(r"layers/(\d+)/(input_layernorm|post_attention_layernorm)/weight", path)
    if m:
        return f"model.layers.{m[1]}.{m[2]}.weight", False
    raise KeyError(f"no Hugging Face name for parameter {path!r}")


class TensorSource(Protocol):
    def names(self) -> set[str]: ...
    def get(self, name: str) -> np.ndarray: ...
    def where(self, name: str) -> str: ...


class HFDirectorySource:
    """Tensors of an HF directory: ``model.safetensors`` or shards listed in the index."""

    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        index = directory / INDEX_NAME
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
            missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
            if missing:
                raise CheckpointError(
                    f"{index} lists shard(s) that do not exist: {missing} "
                    "(re-download or re-export the checkpoint)"
                )
            self._files = {f: SafetensorsFile(directory / f) for f in sorted(set(weight_map.values()))}
            self._owner = {}
            for name, fname in weight_map.items():
                if name not in self._files[fname]:
                    raise CheckpointError(f"{index} says {name!r} is in {fname}, but that shard lacks it")
                self._owner[name] = fname
        elif (directory / SINGLE_NAME).is_file():
            f = SafetensorsFile(directory / SINGLE_NAME)
            self._files = {SINGLE_NAME: f}
            self._owner = {k: SINGLE_NAME for k in f.keys()}
        else:
            raise CheckpointError(
                f"{directory}: no {SINGLE_NAME} or {INDEX_NAME} (only safetensors checkpoints are read)"
            )

    def names(self) -> set[str]:
        return set(self._owner)

    def get(self, name: str) -> np.ndarray:
        return self._files[self._owner[name]].get(name)

    def where(self, name: str) -> str:
        return str(self.directory / self._owner[name])


def load_params(cfg: LlamaConfig, source: TensorSource, mesh: Mesh | None = None) -> Llama:
    """A model whose parameters are the source's tensors, one tensor in flight at a time."""
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    used: set[str] = set()

    def load_leaf(path, sds):
        ours = path_str(path)
        name, transposed = hf_name(ours)
        if name not in source.names():
            raise CheckpointError(f"{_origin(source)}: checkpoint lacks tensor {name!r} (needed for {ours})")
        arr = source.get(name)
        expected = sds.shape[::-1] if transposed else sds.shape
        if tuple(arr.shape) != tuple(expected):
            raise CheckpointError(
                f"{source.where(name)}: tensor {name!r} has shape {tuple(arr.shape)}, but the config "
                f"expects {tuple(expected)}"
            )
        used.add(name)
        view = arr.T if transposed else arr
        dtype = sds.dtype
        if mesh is None:
            return jax.device_put(np.array(view, dtype=dtype))
        sharding = param_sharding(ours, sds.shape, mesh)
        return jax.make_array_from_callback(
            sds.shape, sharding, lambda idx: np.array(view[idx], dtype=dtype)
        )

    state = jax.tree_util.tree_map_with_path(load_leaf, abs_state)
    unexpected = sorted(
        n for n in source.names() - used
        if not _IGNORED.search(n) and not (cfg.tie_word_embeddings and n == "lm_head.weight")
    )
    if unexpected:
        shown = ", ".join(f"{n} ({source.where(n)})" for n in unexpected[:5])
        raise CheckpointError(
            f"checkpoint has {len(unexpected)} tensor(s) the config does not use: {shown}"
            + (" ..." if len(unexpected) > 5 else "")
            + "; does config.json match the weights?"
        )
    return nnx.merge(graphdef, state)


def _origin(source: TensorSource) -> str:
    return str(getattr(source, "directory", "checkpoint"))


def read_hf_config(directory: pathlib.Path, **overrides: Any) -> LlamaConfig:
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory}: no config.json (is this a Hugging Face model directory?)")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON: {e}") from None
    return LlamaConfig.from_hf(raw, source=str(cfg_path), **overrides)


def load_hf_directory(directory: str | pathlib.Path, *, mesh: Mesh | None = None, **overrides: Any):
    """(model, config) from a transformers Llama directory of safetensors."""
    directory = pathlib.Path(directory)
    cfg = read_hf_config(directory, **overrides)
    return load_params(cfg, HFDirectorySource(directory), mesh), cfg


def gguf_cache_dir(path: pathlib.Path) -> pathlib.Path:
    """Where the safetensors copy of a GGUF file lives (under ``core.cache.cache_root()``)."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{key}"


def gguf_to_hf_directory(path: pathlib.Path, out_dir: pathlib.Path) -> pathlib.Path:
    """Dequantises a Llama ``.gguf`` (numpy and the gguf package; ``gguf_io``) into an HF
    directory: config.json, float32 safetensors and the tokenizer. Written to a temporary
    folder and renamed."""
    reader = gguf_io.open_gguf(path)
    hf_cfg = gguf_io.hf_config(reader)
    source = gguf_io.GGUFSource(reader)
    tokenizer = gguf_io.tokenizer(reader)
    names = sorted(source.names(), key=_hf_sort_key)
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)  # parents: the cache folder may not exist yet
    write_safetensors(tmp / SINGLE_NAME, [(n, source.shape(n), np.float32) for n in names], source.get)
    (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2))
    tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def load_gguf(path: str | pathlib.Path, *, mesh: Mesh | None = None, **overrides: Any):
    """(model, config, hf_directory) from a ``.gguf`` file, via a cached safetensors copy."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"GGUF file not found: {path}")
    cached = gguf_cache_dir(path)
    if not (cached / "config.json").is_file():
        gguf_to_hf_directory(path, cached)
    model, cfg = load_hf_directory(cached, mesh=mesh, **overrides)
    return model, cfg, cached


def export_hf(
    model: Llama,
    out_dir: str | pathlib.Path,
    *,
    tokenizer=None,
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> pathlib.Path:
    """Writes config.json + safetensors (sharded with an index past ``max_shard_bytes``)."""
    cfg: LlamaConfig = model.config
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, state = nnx.split(model, nnx.Param)
    leaves = {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}
    np_dtype = np.dtype(jax.numpy.dtype(dtype or cfg.param_dtype))
    specs: list[tuple[str, tuple[int, ...], np.dtype]] = []
    fetchers: dict[str, Any] = {}
    for ours, arr in leaves.items():
        name, transposed = hf_name(ours)
        shape = tuple(arr.shape[::-1] if transposed else arr.shape)
        specs.append((name, shape, np_dtype))
        fetchers[name] = (arr, transposed)
    specs.sort(key=lambda s: _hf_sort_key(s[0]))

    def fetch(name: str) -> np.ndarray:
        arr, transposed = fetchers[name]
        host = np.asarray(jax.device_get(arr))
        return host.T if transposed else host

    shards: list[list] = [[]]
    size = 0
    for spec in specs:
        n = int(np.prod(spec[1])) * np_dtype.itemsize
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += n
    for stale in list(out.glob("model*.safetensors")) + [out / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        write_safetensors(out / SINGLE_NAME, shards[0], fetch)
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            write_safetensors(out / fname, shard, fetch)
            weight_map.update({s[0]: fname for s in shard})
        total = sum(int(np.prod(s[1])) * np_dtype.itemsize for s in specs)
        (out / INDEX_NAME).write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    hf_cfg = cfg.to_hf()
    hf_cfg["torch_dtype"] = str(np_dtype)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def _hf_sort_key(name: str):
    m = re.match(r"model\.layers\.(\d+)\.(.*)", name)
    return (1, int(m[1]), m[2]) if m else ((0, 0, name) if "embed" in name else (2, 0, name))
