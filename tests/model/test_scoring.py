"""Cached continuation scoring (one prompt prefill, the continuations against its cache) equals
the full-sequence reference within 1e-4 (float32)."""

import jax
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


@pytest.mark.parametrize("prompt_len,prefix_len", [(70, 20), (130, 64), (9, 8)])
def test_scores_after_a_cached_prefix_equal_full_sequence_scores(tiny, prompt_len, prefix_len):
    rng = np.random.default_rng(prompt_len)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=prefix_len).tolist()
    conts = [rng.integers(3, vocab, size=k).tolist() for k in (1, 4, 7)]
    for question in range(2):  # the second prompt reuses the first one's prefix cache
        prompt = prefix + rng.integers(3, vocab, size=prompt_len - prefix_len).tolist()
        got = tiny.score_continuations(prompt, conts, prefix_len=prefix_len)
        want = full_sequence_logprobs(tiny, prompt, conts)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
    assert tuple(prefix) in tiny._prefix_caches


def test_a_prefix_cache_is_not_reused_after_the_weights_change(tiny_model_dir):
    model = spark_jax.load_pretrained(str(tiny_model_dir))
    prompt, conts = list(range(3, 40)), [[5, 6], [7]]
    model.score_continuations(prompt, conts, prefix_len=30)
    model.state = jax.tree.map(lambda x: x * 1.5 if x.dtype == np.float32 else x, model.state)
    got = model.score_continuations(prompt, conts, prefix_len=30)
    for g, w in zip(got, full_sequence_logprobs(model, prompt, conts)):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


def test_bad_input_is_refused(tiny):
    with pytest.raises(ValueError, match="non-empty"):
        tiny.score_continuations([], [[1]])
    with pytest.raises(ValueError, match="non-empty"):
        tiny.score_continuations([1, 2], [[1], []])
    with pytest.raises(ValueError, match="prefix_len"):
        tiny.score_continuations([1, 2], [[1]], prefix_len=2)
