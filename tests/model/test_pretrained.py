"""load_pretrained's numpy API: generation semantics, shape buckets and input checks."""

from __future__ import annotations

import numpy as np
import pytest

import spark_jax


@pytest.fixture(scope="module")
def model(tiny_hf):
    return spark_jax.load_pretrained(tiny_hf[0])


def _greedy_reference(model, prompt, n):
    """Re-runs the whole prefix each step: slow, obviously correct."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(np.argmax(model.logits(np.array([seq], np.int32))[0, -1])))
    return seq[len(prompt):]


def test_greedy_generate_equals_full_prefix_argmax(model):
    prompt = [4, 8, 15, 16, 23, 42]
    assert model.generate([prompt], 10, eos_token_ids=()) == [_greedy_reference(model, prompt, 10)]


def test_ragged_batch_equals_one_by_one(model):
    prompts = [[7], [3, 1, 4, 1, 5, 9, 2, 6], [10, 20, 30]]
    batched = model.generate(prompts, 12, eos_token_ids=())
    assert batched == [model.generate([p], 12, eos_token_ids=())[0] for p in prompts]


def test_stops_after_eos_and_includes_it(model):
    prompt = [4, 8, 15, 16, 23, 42]
    free = model.generate([prompt], 10, eos_token_ids=())[0]
    eos = free[3]
    stopped = model.generate([prompt], 10, eos_token_ids=[eos])[0]
    assert stopped == free[: free.index(eos) + 1]


def test_sampling_is_seeded(model):
    prompts = [[1, 2, 3], [9, 9]]
    a = model.generate(prompts, 16, temperature=1.0, seed=3, eos_token_ids=())
    b = model.generate(prompts, 16, temperature=1.0, seed=3, eos_token_ids=())
    c = model.generate(prompts, 16, temperature=1.0, seed=4, eos_token_ids=())
    assert a == b and a != c


def test_one_executable_per_bucket(model):
    before = set(model._compiled)
    model.generate([[1, 2]], 5, eos_token_ids=())
    model.generate([[1, 2, 3, 4, 5]], 9, eos_token_ids=())  # same (batch, prompt, new) buckets
    model.logits(np.zeros((1, 3), np.int32))
    model.logits(np.zeros((1, 11), np.int32))
    new = set(model._compiled) - before
    assert len([k for k in new if k[0] == "generate"]) <= 1
    assert len([k for k in new if k[0] == "logits"]) <= 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.generate([], 4), "non-empty"),
        (lambda m: m.generate([[1], []], 4), "non-empty"),
        (lambda m: m.generate([[1]], 0), "max_new_tokens"),
        (lambda m: m.generate([[1]], 3, temperature=-1.0), "temperature"),
        (lambda m: m.generate([[1, 999]], 3), r"token ids must lie in \[0, 256\)"),
        (lambda m: m.logits(np.zeros((4,), np.int32)), r"\[batch, length\]"),
        (lambda m: m.logits(np.zeros((1, 4), np.int32), np.ones((1, 5))), "attention_mask shape"),
    ],
)
def test_bad_input_is_refused_clearly(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_token_budget_splits_batches_without_changing_results(model):
    prompts = [[7] * 3, [3, 1, 4, 1, 5, 9, 2, 6] * 6, [10, 20, 30], [5] * 20]
    together = model.generate(prompts, 6, eos_token_ids=())
    old = model.max_batch_tokens
    model.max_batch_tokens = 64  # two short prompts fit together (2 x (16 + 16)); the rest go alone
    try:
        assert model._token_budget_groups(prompts, 16) == [[0, 2], [3], [1]]
        assert model.generate(prompts, 6, eos_token_ids=()) == together
    finally:
        model.max_batch_tokens = old


def test_shared_prefix_is_run_once_with_the_same_results(model):
    rng = np.random.default_rng(3)
    system = [int(t) for t in rng.integers(1, 256, 100)]  # a "system prompt" every row starts with
    prompts = [system + [int(t) for t in rng.integers(1, 256, n)] for n in (5, 30, 1)]
    shared = model.generate(prompts, 12, eos_token_ids=())
    keys = [k for k in model._compiled if k[0] in ("generate_prefix", "prefill_prefix")]
    assert keys and keys[-1][2] == 96  # 100 common tokens -> the 96 bucket; each row keeps its own tail
    old = model.min_shared_prefix
    model.min_shared_prefix = 0  # the plain path: whole prompts, left-padded
    try:
        assert model.generate(prompts, 12, eos_token_ids=()) == shared
        assert shared[2] == model.generate([prompts[2]], 12, eos_token_ids=())[0]
    finally:
        model.min_shared_prefix = old


def test_shared_prefix_length_rounds_down_and_keeps_a_tail():
    from spark_jax.model.generate import shared_prefix_length

    base = list(range(300))
    assert shared_prefix_length([base, base]) == 256  # identical prompts keep >= 1 own token: 299 -> 256
    assert shared_prefix_length([base + [1], base[:70] + [5, 6]]) == 64
    assert shared_prefix_length([base, [9] + base]) == 0
    assert shared_prefix_length([base]) == 0  # one prompt: nothing to share


def test_models_of_the_same_structure_share_compiled_functions(tiny_hf):
    a = spark_jax.load_pretrained(tiny_hf[0])
    b = spark_jax.load_pretrained(tiny_hf[0])
    b.state = __import__("jax").tree.map(lambda x: x * 1.01, b.state)  # other weights, same structure
    a.generate([[1, 2, 3]], 4, eos_token_ids=())  # compiles the shared function first
    out_b = b.generate([[1, 2, 3]], 4, eos_token_ids=())
    key = next(k for k in a._compiled if k[0] in ("generate", "decode_loop"))
    assert a._compiled[key] is b._compiled[key]
    assert out_b == b.generate([[1, 2, 3]], 4, eos_token_ids=())  # b runs with its own weights
    np.testing.assert_raises(AssertionError, np.testing.assert_array_equal,
                             a.logits(np.array([[1, 2, 3]], np.int32)), b.logits(np.array([[1, 2, 3]], np.int32)))


def test_cpu_generation_runs_prefill_and_a_row_split_loop_with_the_same_tokens(tiny_hf):
    """On CPU, generate compiles the prefill and the token loop separately, the loop on row-split
    weights (``decode_weight_blocks``); the tokens equal the single-executable path's, for plain
    and shared-prefix batches, greedy and sampled."""
    split = spark_jax.load_pretrained(tiny_hf[0])
    plain = spark_jax.load_pretrained(tiny_hf[0])
    plain.decode_weight_blocks = 0
    assert split.decode_weight_blocks >= 1
    rng = np.random.default_rng(5)
    system = [int(t) for t in rng.integers(1, 256, 70)]
    batches = [[[4, 8, 15], [16, 23, 42, 7, 7]], [system + [5, 6], system + [9]]]
    for prompts in batches:
        for temperature in (0.0, 0.8):
            assert split.generate(prompts, 9, temperature, seed=3, eos_token_ids=()) == \
                plain.generate(prompts, 9, temperature, seed=3, eos_token_ids=())
    assert {k[0] for k in split._compiled} >= {"prefill", "prefill_prefix", "decode_loop"}
    assert {k[0] for k in plain._compiled} >= {"generate", "generate_prefix"}


def test_logits_equal_the_module_forward(model):
    """``logits`` (hidden states and LM head as two executables on CPU) equals one forward pass."""
    ids = np.random.default_rng(1).integers(3, 256, (2, 21)).astype(np.int32)
    want = np.asarray(model.module(ids)[0])
    np.testing.assert_allclose(model.logits(ids), want, atol=1e-5, rtol=0)
