"""Grain input: packed and unpacked rows, action-token masks, truncation, buckets, sharding, state."""

import dataclasses

import numpy as np
import pytest

from spark_jax.data import pipeline as pl
from spark_jax.data.packing import build_rows
from spark_jax.protocol.chat import encode_chat
from tests.conftest import synthetic_records, write_run_dir

EOT = "<|im_end|>"


def _rows(tok, n, max_len=10_000, packing=True, gamma=1.0, steps=3):
    return build_rows(tok, synthetic_records(n, steps=steps), EOT, max_len, packing=packing, gamma=gamma)


def test_end_of_turn_is_derived_from_the_template(chat_tokenizer):
    assert pl.end_of_turn_text(chat_tokenizer) == "<|im_end|>"


@pytest.mark.parametrize("packing", [True, False])
def test_loss_mask_covers_exactly_each_action_and_end_of_turn(chat_tokenizer, packing):
    tok = chat_tokenizer
    recs = synthetic_records(3)
    rows, stats = build_rows(tok, recs, EOT, 10_000, packing=packing, gamma=1.0)
    assert stats.rows == (1 if packing else 3) and stats.kept_records == 3 and stats.broken_boundaries == 0
    batch = pl.collate(rows, (64, 128, 256, 512), tok.pad_token_id)
    trained = []
    for i in range(len(rows)):
        for j in range(int(batch["span_mask"][i].sum())):
            sel = (batch["action_span"][i] == j) & (batch["action_mask"][i] > 0)
            trained.append(tok.decode(batch["targets"][i][batch["action_positions"][i][sel]]))
    assert trained == [r["action_text"] + EOT for r in recs]
    # the packed row is the last step's whole sequence: its state, then its action
    last = encode_chat(tok, recs[-1]["messages"], add_generation_prompt=True)
    assert list(rows[-1].token_ids[:len(last)]) == last
    n = int(batch["attention_mask"][0].sum())
    np.testing.assert_array_equal(batch["targets"][0, : n - 1], batch["input_ids"][0, 1:n])
    assert not batch["loss_mask"][0, n:].any()
    # span_start is the last state token: the position that predicts the action's first token
    for j, (start, _) in enumerate(rows[0].spans):
        assert batch["span_start"][0, j] == start - 1 and batch["loss_mask"][0, start - 1] == 1


def test_packing_needs_far_fewer_tokens(chat_tokenizer):
    _, packed = _rows(chat_tokenizer, 30, packing=True)
    _, unpacked = _rows(chat_tokenizer, 30, packing=False)
    assert packed.kept_records == unpacked.kept_records == 30
    assert packed.tokens < 0.6 * unpacked.tokens


def test_returns_are_discounted_over_later_steps(chat_tokenizer):
    recs = synthetic_records(3)
    r = [x["reward"] for x in recs]
    (row,), _ = build_rows(chat_tokenizer, recs, EOT, 10_000, packing=True, gamma=0.5)
    np.testing.assert_allclose(row.returns, [r[0] + 0.5 * r[1] + 0.25 * r[2], r[1] + 0.5 * r[2], r[2]])
    np.testing.assert_allclose(row.rewards, r)
    (row,), _ = build_rows(chat_tokenizer, recs, EOT, 10_000, packing=True, gamma=0.0)
    np.testing.assert_allclose(row.returns, r)  # gamma 0: the step's own reward
    assert row.steps == (0, 1, 2) and row.kinds == (0, 0, 0)  # calculator, python, chemistry: tools


def test_a_state_longer_than_the_largest_bucket_names_the_question(chat_tokenizer):
    with pytest.raises(ValueError, match=r"question 0 step \d: its state and action take \d+ tokens.*bucket 60"):
        _rows(chat_tokenizer, 3, max_len=60)


def test_a_template_that_rewrites_earlier_turns_falls_back_to_unpacked_rows(chat_tokenizer, caplog):
    """Mistral-style: the system prompt moves into the last user turn, so no state extends the
    previous step's tokens."""
    import copy

    rewriting = copy.deepcopy(chat_tokenizer)
    rewriting.name_or_path = "mistral-like"
    rewriting.chat_template = (
        "{% for message in messages %}{% if message['role'] != 'system' %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if loop.last and message['role'] == 'user' %}{{ messages[0]['content'] + ' ' }}{% endif %}"
        "{{ message['content'] + '<|im_end|>' + '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with caplog.at_level("WARNING"):
        rows, stats = build_rows(rewriting, synthetic_records(6), EOT, 10_000, packing=True, gamma=1.0)
    assert stats.broken_boundaries == 4 and stats.packed_boundaries == 0
    assert len(rows) == 6 and all(len(r.spans) == 1 for r in rows)
    assert "mistral-like" in caplog.text and "rewrites earlier turns" in caplog.text


def test_unpacked_left_truncation_keeps_the_action_and_counts(chat_tokenizer, caplog):
    full, _ = _rows(chat_tokenizer, 6, packing=False)
    max_len = min(r.length for r in full) - 5
    with caplog.at_level("WARNING"):
        out, stats = _rows(chat_tokenizer, 6, max_len=max_len, packing=False)
    assert stats.truncated == 6 and stats.truncated_tokens > 0 and "cut from the left" in caplog.text
    for f, o in zip(full, out):
        (fs, fe), (os_, oe) = f.spans[0], o.spans[0]
        assert o.token_ids[os_:oe] == f.token_ids[fs:fe]
        assert o.token_ids == f.token_ids[-len(o.token_ids):]  # the right end survives
        assert o.length == max_len


def test_unpacked_records_whose_action_does_not_fit_are_dropped(chat_tokenizer):
    out, stats = _rows(chat_tokenizer, 4, max_len=4, packing=False)
    assert out == [] and stats.dropped == 4


def test_batches_are_bucketed_shuffled_and_restorable(chat_tokenizer, tmp_path):
    run = write_run_dir(tmp_path / "run", synthetic_records(30))  # 10 trajectories
    it, stats = pl.build_input(run, chat_tokenizer, batch_size=2, buckets=(128, 256), seed=3)
    assert stats.rows == 10 and stats.kept_records == 30
    batches = [next(it) for _ in range(3)]
    for b in batches:
        assert b["input_ids"].shape[0] == 2 and b["input_ids"].shape[1] in (128, 256)
        assert b["input_ids"].dtype == np.int32 and b["loss_mask"].dtype == np.float32
        assert b["span_mask"].shape == (2, 3)  # S is the run's largest span count
    state = it.get_state()
    nxt = [next(it) for _ in range(6)]  # crosses an epoch boundary (5 batches per epoch)
    it2, _ = pl.build_input(run, chat_tokenizer, batch_size=2, buckets=(128, 256), seed=3)
    it2.set_state(state)
    for a, b in zip(nxt, [next(it2) for _ in range(6)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    it3, _ = pl.build_input(run, chat_tokenizer, batch_size=2, buckets=(128, 256), seed=4)
    assert not np.array_equal(next(it3)["span_reward"], batches[0]["span_reward"])


def test_processes_get_disjoint_shards(chat_tokenizer):
    rows, _ = _rows(chat_tokenizer, 36)
    seen = []
    for i in range(3):
        ds = pl.make_dataset(rows, batch_size=4, buckets=(256,), pad_id=0, seed=0, process_index=i, process_count=3)
        seen.append(sorted(np.asarray(ds[0]["span_reward"][:, 0]).tolist()))
    flat = sorted(x for s in seen for x in s)
    assert flat == sorted(float(np.float32(r.rewards[0])) for r in rows)


def test_too_few_rows_is_a_clear_error(chat_tokenizer):
    rows, _ = _rows(chat_tokenizer, 9)
    with pytest.raises(ValueError, match="fewer than its batch size 4.*packing"):
        pl.make_dataset(rows, batch_size=4, buckets=(256,), pad_id=0, seed=0)


def test_process_blocks_share_the_global_bucket_and_concatenate_to_the_global_batch(chat_tokenizer):
    rows, _ = _rows(chat_tokenizer, 16, packing=False)
    # One long row: the process that does not hold it must still pad to its bucket.
    r0 = rows[0]
    pad = r0.spans[0][0]
    k = max(r.length for r in rows) // pad + 1
    long = dataclasses.replace(r0, token_ids=r0.token_ids[:pad] * k + r0.token_ids[pad:],
                               spans=((k * pad, k * pad + r0.action_tokens),))
    rows = [long] + rows[1:]
    buckets = (max(r.length for r in rows[1:]), long.length)
    whole = pl.make_dataset(rows, batch_size=8, buckets=buckets, pad_id=0, seed=3)
    parts = [pl.make_dataset(rows, batch_size=4, buckets=buckets, pad_id=0, seed=3, process_index=i,
                             process_count=2) for i in range(2)]
    lengths = set()
    for step in range(4):
        ref = whole[step]
        blocks = [p[step] for p in parts]
        assert blocks[0]["input_ids"].shape == blocks[1]["input_ids"].shape == (4, ref["input_ids"].shape[1])
        lengths.add(ref["input_ids"].shape[1])
        for k in ref:
            np.testing.assert_array_equal(np.concatenate([b[k] for b in blocks]), ref[k], err_msg=k)
    assert len(lengths) > 1  # some global batches hold the long row, others do not


def test_action_positions_list_the_loss_mask_in_order(chat_tokenizer):
    tok = chat_tokenizer
    rows, _ = _rows(tok, 6)
    batch = pl.collate(rows, (64, 128, 256, 512), tok.pad_token_id, action_buckets=(4, 8, 16, 32, 64))
    longest = max(r.action_tokens for r in rows)
    a = batch["action_positions"].shape[1]
    assert a == min(b for b in (4, 8, 16, 32, 64) if b >= longest)
    for i, row in enumerate(rows):
        where = np.flatnonzero(batch["loss_mask"][i])
        k = int(batch["action_mask"][i].sum())
        assert k == len(where) == row.action_tokens
        np.testing.assert_array_equal(batch["action_positions"][i, :k], where)
        assert not batch["action_positions"][i, k:].any()
        want = [t for s, e in row.spans for t in row.token_ids[s:e]]
        np.testing.assert_array_equal(batch["targets"][i, batch["action_positions"][i, :k]], want)


def test_action_length_is_a_bucket_capped_at_the_batch_length():
    assert pl.action_length(20, (32, 64), 512) == 32
    assert pl.action_length(20, (32, 64), 24) == 24  # never longer than the sequence
    assert pl.action_length(100, (32, 64), 512) == 128  # past the largest bucket: a multiple of it
    assert pl.action_length(100, (32, 64), 96) == 96
    with pytest.raises(ValueError, match="row 0 has 3 action tokens"):
        pl.action_arrays(np.ones((1, 5), np.float32)[:, :3], 2)


def test_processes_agree_on_the_action_length(chat_tokenizer):
    tok = chat_tokenizer
    rows, _ = _rows(tok, 12)
    rows.sort(key=lambda r: r.action_tokens)
    parts = [pl.collate_process_rows(rows, (256, 512), tok.pad_token_id, i, 2, action_buckets=(4, 8, 16, 32, 64))
             for i in range(2)]
    assert parts[0]["action_positions"].shape == parts[1]["action_positions"].shape
    whole = pl.collate(rows, (256, 512), tok.pad_token_id, action_buckets=(4, 8, 16, 32, 64))
    assert parts[0]["action_positions"].shape[1] == whole["action_positions"].shape[1]
