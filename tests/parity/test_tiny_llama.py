"""Parity with transformers on a random tiny Llama-3.1-style model (float32).

Tolerance: max |logit diff| <= 1e-4 and mean per-token KL(hf || ours) <= 1e-6 over a
600-token sequence, long enough that llama3 rope scaling (original context 64) matters and
that long-prefill attention runs in query blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spark_jax

SEQ_LEN = 600  # > QUERY_CHUNK, so the blocked attention path is the one compared


def _kl(ref_logits, our_logits):
    ref = torch.log_softmax(torch.as_tensor(ref_logits, dtype=torch.float64), -1)
    ours = torch.log_softmax(torch.as_tensor(our_logits, dtype=torch.float64), -1)
    return float((ref.exp() * (ref - ours)).sum(-1).mean())


@pytest.fixture(scope="module")
def pair(tiny_hf):
    path, torch_model = tiny_hf
    return spark_jax.load_pretrained(path), torch_model


def test_logits_match_transformers_on_long_sequence(pair):
    ours, ref = pair
    ids = np.random.default_rng(0).integers(0, ours.config.vocab_size, (2, SEQ_LEN)).astype(np.int32)
    got = ours.logits(ids)
    with torch.no_grad():
        want = ref(torch.as_tensor(ids, dtype=torch.long)).logits.numpy()
    assert got.shape == (2, SEQ_LEN, ours.config.vocab_size) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4
    assert _kl(want, got) <= 1e-6


def test_sequence_is_long_enough_to_exercise_llama3_scaling(tiny_hf, pair):
    """The same weights with default rope give clearly different logits, so a rope-scaling bug
    could not hide under the tolerance above."""
    from spark_jax.model.config import RopeScaling

    ours, _ = pair
    plain = spark_jax.load_pretrained(tiny_hf[0], rope_scaling=RopeScaling("default"))
    ids = np.random.default_rng(1).integers(0, ours.config.vocab_size, (1, SEQ_LEN)).astype(np.int32)
    assert np.abs(plain.logits(ids) - ours.logits(ids)).max() > 1e-2


def test_padded_batch_matches_transformers(pair):
    """Right-padded rows: real-token logits equal transformers' with the same attention mask."""
    ours, ref = pair
    rng = np.random.default_rng(2)
    ids = rng.integers(0, ours.config.vocab_size, (3, 40)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 10:] = 0
    got = ours.logits(ids, mask)
    with torch.no_grad():
        want = ref(torch.as_tensor(ids, dtype=torch.long), attention_mask=torch.as_tensor(mask)).logits.numpy()
    real = mask.astype(bool)
    assert np.abs(got[real] - want[real]).max() <= 1e-4


def test_greedy_generation_matches_transformers(pair):
    ours, ref = pair
    prompt = [5, 17, 99, 3, 42, 7]
    got = ours.generate([prompt], 24, eos_token_ids=())
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                           pad_token_id=0)
    assert got[0] == out[0, len(prompt):].tolist()
