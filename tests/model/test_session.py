"""DecodeSession: appends, scores and decodes equal the one-shot paths on the whole state."""

import numpy as np
import pytest

import spark_jax
from spark_jax.model.session import DecodeSession
from spark_jax.testing.score_reference import full_sequence_logprobs


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return spark_jax.load_pretrained(str(tiny_model_dir))


@pytest.mark.parametrize("group_rows", [4, 2, 1])  # one [B, T] block; groups of two rows, of one (gathered)
def test_scores_after_appends_equal_full_sequence_scores(tiny, monkeypatch, group_rows):
    from spark_jax.model import session as session_mod

    monkeypatch.setattr(session_mod, "GROUP_ROWS", group_rows)
    rng = np.random.default_rng(0)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=20).tolist()
    conts = [rng.integers(3, vocab, size=k).tolist() for k in (1, 4, 6)]
    singles = [[int(t)] for t in rng.integers(3, vocab, size=5)]  # one-token continuations: no scan
    states = [prefix + rng.integers(3, vocab, size=n).tolist() for n in (5, 30, 17)]
    session = DecodeSession(tiny, prefix, rows=3)
    for step in range(3):  # the states grow by uneven amounts; one row does not grow at step 1
        assert session.extend_to([None if (step == 1 and i == 0) else s for i, s in enumerate(states)])
        got, got1 = session.score(conts), session.score(singles)
        for i, s in enumerate(states):
            want = full_sequence_logprobs(tiny, s, conts)
            for j, w in enumerate(want):
                np.testing.assert_allclose(got[i, j, :len(w)], w, atol=1e-4, rtol=0)
                assert not got[i, j, len(w):].any()
            np.testing.assert_allclose(got1[i, :, 0], [w[0] for w in full_sequence_logprobs(tiny, s, singles)],
                                       atol=1e-4, rtol=0)
        states = [s + rng.integers(3, vocab, size=k).tolist() if not (step == 0 and i == 0) else s
                  for i, (s, k) in enumerate(zip(states, (7, 2, 40)))]


@pytest.mark.parametrize("group_rows", [4, 1])
def test_greedy_decode_equals_generate_and_leaves_the_state(tiny, monkeypatch, group_rows):
    from spark_jax.model import session as session_mod

    monkeypatch.setattr(session_mod, "GROUP_ROWS", group_rows)
    rng = np.random.default_rng(1)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=12).tolist()
    states = [prefix + rng.integers(3, vocab, size=n).tolist() for n in (3, 21)]
    session = DecodeSession(tiny, prefix, rows=2)
    session.extend_to(states)
    conts = [[5, 6], [7]]
    before = session.score(conts)
    got = session.generate(10, eos_token_ids=(2,))
    assert got == tiny.generate(states, 10, eos_token_ids=(2,))
    np.testing.assert_allclose(session.score(conts), before, atol=1e-6, rtol=0)  # rolled back


def test_a_state_that_is_not_an_extension_is_refused(tiny):
    session = DecodeSession(tiny, [3, 4, 5], rows=1)
    assert session.extend_to([[3, 4, 5, 6, 7]])
    assert not session.extend_to([[3, 4, 5, 9, 7, 8]])
    assert session.tokens == [[6, 7]]


def test_the_cache_grows_past_its_slots_and_rewinds(tiny, monkeypatch):
    from spark_jax.model import session as session_mod

    monkeypatch.setattr(session_mod, "SLOT_STEP", 32)
    rng = np.random.default_rng(2)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=10).tolist()
    state = prefix + rng.integers(3, vocab, size=15).tolist()
    session = DecodeSession(tiny, prefix, rows=1)
    session.extend_to([state])
    slots = session.slots
    mark = session.mark()
    session.extend([rng.integers(3, vocab, size=30).tolist()])  # past the first 32 slots
    assert session.slots > slots
    session.rewind(mark)
    assert session.tokens == [state[10:]] and session.index == mark[0]
    conts = [[5, 6, 7]]
    got = session.score(conts)[0, 0, :3]
    np.testing.assert_allclose(got, full_sequence_logprobs(tiny, state, conts)[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("group_rows", [4, 2])
def test_a_short_last_group_leaves_the_other_rows_tokens(tiny, monkeypatch, group_rows):
    # 6 rows (8 with padding), 5 of them appended to (blocks long enough to be grouped): groups
    # of 4 and 1 (or 2, 2 and 1), the short one filled with rows that get no tokens. Filling it
    # with rows of the first group wiped their new slots. Then a short block: one [8, T] pass.
    from spark_jax.model import session as session_mod

    monkeypatch.setattr(session_mod, "GROUP_ROWS", group_rows)
    rng = np.random.default_rng(3)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=10).tolist()
    states = [prefix + rng.integers(3, vocab, size=n).tolist() for n in (20, 25, 18, 30, 17, 21)]
    session = DecodeSession(tiny, prefix, rows=6)
    assert session.extend_to(states)
    conts = [rng.integers(3, vocab, size=k).tolist() for k in (1, 3)]
    for more in ((21, 18, 0, 26, 17, 19), (0, 7, 3, 12, 0, 16)):
        states = [s + rng.integers(3, vocab, size=k).tolist() if k else s for s, k in zip(states, more)]
        assert session.extend_to(states)
        got = session.score(conts)
        for i, s in enumerate(states):
            for j, w in enumerate(full_sequence_logprobs(tiny, s, conts)):
                np.testing.assert_allclose(got[i, j, :len(w)], w, atol=1e-4, rtol=0)


def test_tree_block_lays_out_the_common_prefix_once():
    from spark_jax.model.session import tree_block

    tree = tree_block([[9, 8, 1, 5], [9, 8, 2], [9, 8]])  # common prefix [9, 8]; the last is only that
    m = tree["ids"].shape[0]
    assert m == 8 and tree["ids"][:5].tolist() == [9, 8, 1, 5, 2]
    assert tree["offset"][:5].tolist() == [0, 1, 2, 3, 2]
    assert tree["source"][:5].tolist() == [0, 1, 2, 3, 2]  # "2" is predicted from the prefix's last token
    assert tree["take"].tolist()[0][:4] == [0, 1, 2, 3] and tree["take"].tolist()[1][:3] == [0, 1, 4]
    assert tree["cmask"].sum(axis=1).tolist() == [4, 3, 2]
    allowed = tree["allowed"]
    assert allowed[4, :2].all() and not allowed[4, 2:4].any() and allowed[4, 4]  # reads the prefix, not branch 1
    assert allowed[3, 2] and not allowed[2, 3]  # causal inside a branch
    assert not allowed[5:, :5].any()  # padding reads nothing real


def test_headers_with_a_common_prefix_scored_for_some_rows(tiny):
    # Action headers share their first tokens and last tokens; scored as one tree for a subset
    # of the rows (finished episodes are not run), each equal to a full pass over its state.
    rng = np.random.default_rng(4)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=10).tolist()
    states = [prefix + rng.integers(3, vocab, size=n).tolist() for n in (9, 14, 5, 22, 11)]
    session = DecodeSession(tiny, prefix, rows=5)
    assert session.extend_to(states)
    head, tail = [11, 12], [13, 14]
    conts = [head + [20] + tail, head + [21, 22] + tail, head + [23] + tail, head]
    for rows in ([3, 1], [0, 1, 2, 3, 4], [4]):
        got = session.score(conts, rows=rows)
        assert got.shape[0] == len(rows)
        for k, i in enumerate(rows):
            for j, w in enumerate(full_sequence_logprobs(tiny, states[i], conts)):
                np.testing.assert_allclose(got[k, j, :len(w)], w, atol=1e-4, rtol=0)
                assert not got[k, j, len(w):].any()
    with pytest.raises(ValueError, match="rows"):
        session.score(conts, rows=[5])


def test_generate_for_some_rows_after_their_prompts(tiny):
    rng = np.random.default_rng(5)
    vocab = tiny.config.vocab_size
    prefix = rng.integers(3, vocab, size=12).tolist()
    states = [prefix + rng.integers(3, vocab, size=n).tolist() for n in (3, 21, 9)]
    session = DecodeSession(tiny, prefix, rows=3)
    session.extend_to(states)
    before = session.score([[5, 6]])
    prompts = [[7, 8, 9], [10]]
    got = session.generate(10, rows=[2, 0], prompts=prompts, eos_token_ids=(2,))
    assert got == tiny.generate([states[2] + prompts[0], states[0] + prompts[1]], 10, eos_token_ids=(2,))
    np.testing.assert_allclose(session.score([[5, 6]]), before, atol=1e-6, rtol=0)  # the cache is unchanged
    with pytest.raises(ValueError, match="prompts"):
        session.generate(4, rows=[0], prompts=[[1], [2]])
