"""LocalJudge: expected-score math (pure), and the batched jitted pass on tiny random models."""

import asyncio
import math

import numpy as np
import pytest

from spark_jax.judge import JudgeConfig, build_judge, prompts
from spark_jax.judge.local_judge import (
    LocalJudge,
    answer_distribution,
    answer_log_masses,
    expected_score,
    score_tokens,
    shared_prefix_length,
)
from spark_jax.protocol.chat import encode_chat
from spark_jax.protocol.interfaces import JudgeRequest

# ---- pure math -------------------------------------------------------------------------------


def test_expected_score_on_hand_made_distributions():
    one_hot = np.zeros(11)
    one_hot[7] = 1.0
    assert expected_score(one_hot) == pytest.approx(7.0)
    assert expected_score(np.full(11, 1 / 11)) == pytest.approx(5.0)
    ends = np.zeros(11)
    ends[[0, 10]] = 0.5
    assert expected_score(ends) == pytest.approx(5.0)
    batch = np.stack([one_hot, ends])
    np.testing.assert_allclose(expected_score(batch), [7.0, 5.0])


def test_renormalises_over_the_eleven_answers_only():
    # 60% of the next-token mass is on answers, the rest on other tokens: renormalised away.
    p = np.zeros(11)
    p[2], p[8], p[10] = 0.15, 0.30, 0.15
    probs = answer_distribution(np.log(p + 1e-300))
    np.testing.assert_allclose(probs[[2, 8, 10]], [0.25, 0.5, 0.25], atol=1e-12)
    assert expected_score(probs) == pytest.approx(0.25 * 2 + 0.5 * 8 + 0.25 * 10)


def test_two_token_ten_splits_the_mass_of_one():
    # p("1") = 0.4 and p("0" | "1") = 0.25: answer 1 gets 0.3, answer 10 gets 0.1.
    digits = np.full(10, 0.05)
    digits[1] = 0.4
    masses = np.exp(answer_log_masses(np.log(digits), np.log(0.25)))
    assert masses.shape == (11,)
    assert masses[1] == pytest.approx(0.3) and masses[10] == pytest.approx(0.1)
    np.testing.assert_allclose(masses[[0, 2, 9]], 0.05)
    probs = answer_distribution(np.log(masses))
    expected = (sum(k * 0.05 for k in (0, 2, 3, 4, 5, 6, 7, 8, 9)) + 1 * 0.3 + 10 * 0.1) / (0.05 * 9 + 0.4)
    assert expected_score(probs) == pytest.approx(expected)


def test_two_token_math_is_stable_at_the_extremes():
    digits = np.log(np.full((2, 10), 0.1))
    q = np.array([-1e-12, -80.0])  # "0" after "1" almost certain / almost impossible
    probs = answer_distribution(answer_log_masses(digits, q))
    assert np.isfinite(probs).all()
    assert probs[0, 10] == pytest.approx(0.1) and probs[0, 1] < 1e-9
    assert probs[1, 1] == pytest.approx(0.1) and probs[1, 10] < 1e-30


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2], [1, 2, 3]]) == 2
    assert shared_prefix_length([[7], [8]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 3


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="11 answer"):
        answer_log_masses(np.zeros(10), None)
    with pytest.raises(ValueError, match="10 digit"):
        answer_log_masses(np.zeros(11), np.zeros(()))
    with pytest.raises(ValueError, match="11 answers"):
        expected_score(np.zeros(10))


# ---- tiny models ------------------------------------------------------------------------------


def test_score_tokens_for_both_tokenizer_kinds(tiny_chat_model_split_digits, tiny_chat_model_single_ten):
    split = score_tokens(tiny_chat_model_split_digits.tokenizer)
    single = score_tokens(tiny_chat_model_single_ten.tokenizer)
    assert split.ten is None and len(split.first_ids) == 10
    assert single.ten is not None and len(single.first_ids) == 11


class GluedSpaceTokenizer:
    """Fake tokenizer whose numbers carry their leading space (" 7", " 1" "0"), like some BPEs."""

    def encode(self, text, add_special_tokens=False):
        import re

        return [int.from_bytes(t.encode(), "big") for t in re.findall(r" ?\d|Score|:| |\w+", text)]


def test_score_tokens_falls_back_to_a_glued_space_answer():
    st = score_tokens(GluedSpaceTokenizer())
    tok = GluedSpaceTokenizer()
    assert st.prefix == tuple(tok.encode("Score:"))
    assert st.digits == tuple(tok.encode(f" {k}")[0] for k in range(10))
    assert st.ten is None and st.zero_after_one == tok.encode("0")[0]


def test_score_tokens_refuses_multi_token_digits():
    class Bytes:
        def encode(self, text, add_special_tokens=False):
            return [b for ch in text for b in (ord(ch), 0)]  # every character is two tokens

    with pytest.raises(ValueError, match="cannot read its answer distribution"):
        score_tokens(Bytes())


def reference_score(model, request, action):
    """Unbatched, unpadded reference from the model's full logits."""
    tok = model.tokenizer
    st = score_tokens(tok)
    ids = encode_chat(tok, prompts.single_action_messages(request, action)) + list(st.prefix) + [st.digits[1]]
    logits = model.logits(np.asarray([ids], np.int32))[0].astype(np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    first = logp[len(ids) - 2, list(st.first_ids)]
    zero = None if st.ten is not None else logp[len(ids) - 1, st.zero_after_one]
    return float(expected_score(answer_distribution(answer_log_masses(first, zero))))


@pytest.mark.parametrize("which", ["tiny_chat_model_split_digits", "tiny_chat_model_single_ten"])
def test_batched_scores_are_finite_in_range_and_match_unbatched(which, request, judge_request):
    model = request.getfixturevalue(which)
    judge = LocalJudge(model, name="tiny")
    res = asyncio.run(judge.score(judge_request))
    assert res.ok and list(res.scores) == list(judge_request.actions) and len(res.scores) == 9
    assert all(math.isfinite(s) and 0.0 <= s <= 10.0 for s in res.scores.values())
    assert len(set(round(s, 6) for s in res.scores.values())) > 1  # the prompts differ per candidate
    for action in ("calculator", "cot"):  # padding and gathering do not change a row's answer
        assert res.scores[action] == pytest.approx(reference_score(model, judge_request, action), abs=1e-4)


def test_one_jitted_call_per_step_and_one_compile_per_bucket(tiny_chat_model_split_digits, judge_request):
    judge = LocalJudge(tiny_chat_model_split_digits)
    calls = []
    inner = judge._answer_logps

    def counting(*args):
        calls.append((args[1].shape, args[3].shape))  # (prefix [1, P], suffixes [B, S])
        return inner(*args)

    judge._answer_logps = counting
    later = JudgeRequest(judge_request.question, judge_request.messages[:3], 0, judge_request.actions)
    asyncio.run(judge.score(judge_request))
    asyncio.run(judge.score(later))
    assert len(calls) == 2 and calls[0] == calls[1]  # one call per step, both in one shape bucket
    (prefix_shape, suffix_shape) = calls[0]
    assert prefix_shape[0] == 1 and suffix_shape[0] == 9  # shared prefix once, 9 candidate rows
    assert suffix_shape[1] < prefix_shape[1]  # the per-candidate part is the short one
    assert inner._cache_size() == 1
    assert judge.compiled_buckets == {(prefix_shape[1], suffix_shape[0], suffix_shape[1])}


def test_too_long_prompt_is_a_failed_step(tiny_chat_model_split_digits, judge_request):
    limit = tiny_chat_model_split_digits.config.max_position_embeddings
    long_msgs = list(judge_request.messages) + [{"role": "user", "content": "energy " * (limit + 76)}]
    req = JudgeRequest(judge_request.question, long_msgs, 2, judge_request.actions)
    judge = LocalJudge(tiny_chat_model_split_digits)
    res = asyncio.run(judge.score(req))
    assert not res.ok and res.scores is None and f"exceeds the model's {limit} positions" in res.error
    assert judge.stats.failures == 1


def test_score_does_not_block_the_event_loop(tiny_chat_model_split_digits, judge_request):
    judge = LocalJudge(tiny_chat_model_split_digits)
    ticks = []

    async def ticker():
        while True:
            ticks.append(1)
            await asyncio.sleep(0.001)

    async def main():
        t = asyncio.create_task(ticker())
        await judge.score(judge_request)
        t.cancel()

    asyncio.run(main())
    assert len(ticks) > 1


def test_build_local_judge(tiny_chat_model_single_ten, judge_request):
    judge = build_judge(JudgeConfig(backend="local"), local_model=tiny_chat_model_single_ten)
    assert isinstance(judge, LocalJudge) and judge.name == "local:embedded"
    assert asyncio.run(judge.score(judge_request)).ok


@pytest.mark.slow
def test_embedded_smollm2_judges_nine_candidates(judge_request):
    from spark_jax.model.pretrained import load_pretrained

    model = load_pretrained("embedded")
    judge = LocalJudge(model, name="embedded")
    assert judge.tokens.ten is None  # SmolLM2 splits digits: "10" is "1" "0"
    details = judge.score_sync(judge_request)
    scores = np.array(list(details.scores.values()))
    assert scores.shape == (9,) and np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 10).all()
    # An instruct model asked for one integer puts most of its mass on the answers.
    assert float(details.digit_mass.mean()) > 0.5, details.digit_mass
