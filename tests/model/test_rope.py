"""RoPE frequencies against transformers' own initialisers; rotation invariants."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from spark_jax.model import rope
from spark_jax.model.config import RopeScaling, llama3_1_8b, smollm2_135m


@pytest.mark.parametrize("cfg", [llama3_1_8b(), smollm2_135m()], ids=["llama3.1-8b", "smollm2"])
def test_inverse_frequencies_match_transformers(cfg):
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    hf = cfg.to_hf()
    for key in ("architectures", "model_type", "torch_dtype"):
        hf.pop(key)
    emb = LlamaRotaryEmbedding(HFLlamaConfig(**hf))
    ours = rope.inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    np.testing.assert_allclose(ours, emb.inv_freq.numpy(), rtol=1e-6, atol=0)


def test_llama3_scaling_keeps_high_and_divides_low_frequencies():
    plain = rope.inverse_frequencies(128, 500000.0, RopeScaling())
    scaled = rope.inverse_frequencies(128, 500000.0, RopeScaling("llama3", 8.0, 1.0, 4.0, 8192))
    assert scaled[0] == plain[0]  # shortest wavelength untouched
    np.testing.assert_allclose(scaled[-1], plain[-1] / 8.0, rtol=1e-6)  # longest slowed by factor


def test_rotation_preserves_norm_and_depends_on_relative_position():
    rng = np.random.default_rng(0)
    inv = rope.inverse_frequencies(16, 10000.0, RopeScaling())
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

    def rot(x, pos):
        cos, sin = rope.rope_tables(jnp.array([[pos]]), inv)
        return rope.apply_rope(x, cos, sin)

    np.testing.assert_allclose(jnp.linalg.norm(rot(q, 37)), jnp.linalg.norm(q), rtol=1e-5)
    dot_a = float(jnp.sum(rot(q, 10) * rot(k, 3)))
    dot_b = float(jnp.sum(rot(q, 107) * rot(k, 100)))
    assert abs(dot_a - dot_b) < 1e-4
