"""Cached continuation scoring (one prompt prefill, the continuations against its cache) equals
the full-sequence reference within 1e-4 (float32)."""

import numpy as np
import pytest

import spark_jax
from spark_jax.testing.score_reference import full_sequence_logprobs


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return spark_jax.load_pretrained(str(tiny_model_dir))


@pytest.mark.parametrize("prompt_len", [5, 70, 130])  # past the tiny model's original rope context (64)
def test_cached_scores_equal_full_sequence_scores(tiny, prompt_len):
    rng = np.random.default_rng(prompt_len)
    vocab = tiny.config.vocab_size
    prompt = rng.integers(3, vocab, size=prompt_len).tolist()
    conts = [rng.integers(3, vocab, size=k).tolist() for k in (1, 4, 7, 3, 9)]
    got = tiny.score_continuations(prompt, conts)
    want = full_sequence_logprobs(tiny, prompt, conts)
    assert [len(g) for g in got] == [len(c) for c in conts]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
    # the ranking the agent uses is the same
    assert np.argmax([sum(g) for g in got]) == np.argmax([sum(w) for w in want])


def test_bad_input_is_refused(tiny):
    with pytest.raises(ValueError, match="non-empty"):
        tiny.score_continuations([], [[1]])
    with pytest.raises(ValueError, match="non-empty"):
        tiny.score_continuations([1, 2], [[1], []])
