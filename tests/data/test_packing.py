"""Packed trajectories: every action span's log-probs equal the unpacked record's (float32, 1e-5),
here on a tiny Llama-3.1 config (llama3 rope scaling, sequences past its original context); the
real SmolLM2 case is in tests/parity/test_smollm2.py."""

import spark_jax
from tests.conftest import synthetic_records
from tests.data.packing_check import max_span_difference

TOL = 1e-5


def test_packed_span_logprobs_equal_unpacked_on_tiny_llama31(tiny_model_dir):
    pretrained = spark_jax.load_pretrained(str(tiny_model_dir))
    scaling = pretrained.module.config.rope_scaling
    assert scaling.rope_type == "llama3" and scaling.original_max_position_embeddings == 64  # 3.1 scaling bites
    diff, packed, single = max_span_difference(pretrained, synthetic_records(12, steps=4), buckets=(128, 256))
    assert (packed, single) == (3, 12)
    assert diff <= TOL, diff
