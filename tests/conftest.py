"""Shared fixtures: a random tiny Llama-3.1-style checkpoint written by transformers itself."""

from __future__ import annotations

import os

# Tests must never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from spark_jax.jax_setup import enable_compilation_cache  # noqa: E402

# Shared by xdist workers and later runs: each shape bucket compiles once per machine.
enable_compilation_cache()


def make_hf_llama(path, seed: int = 0, init_std: float = 0.1, **config_overrides):
    """Saves a random transformers LlamaForCausalLM (tiny preset shapes) to ``path``; returns it."""
    import torch
    from transformers import LlamaConfig as HFLlamaConfig, LlamaForCausalLM

    from spark_jax.model.config import tiny

    hf = tiny(**config_overrides).to_hf()
    for key in ("architectures", "model_type", "torch_dtype"):
        hf.pop(key)
    torch.manual_seed(seed)
    # A wider init than HF's 0.02 makes logits depend visibly on position, so rope bugs show.
    model = LlamaForCausalLM(HFLlamaConfig(initializer_range=init_std, **hf)).eval()
    model.save_pretrained(str(path))
    return model


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """(directory, torch model) of a tiny random Llama with GQA, untied embeddings and llama3
    rope scaling whose original context (64) is far below the 500-token test sequences."""
    path = tmp_path_factory.mktemp("tiny_hf")
    return path, make_hf_llama(path)
