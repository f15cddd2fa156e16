"""Grain input: chat-template rendering, action-token masks, truncation, buckets, sharding, state."""

import numpy as np
import pytest

from spark_jax.data import pipeline as pl
from spark_jax.data.chat import encode_chat
from tests.conftest import synthetic_records, write_run_dir


def test_end_of_turn_is_derived_from_the_template(chat_tokenizer):
    assert pl.end_of_turn_text(chat_tokenizer) == "<|im_end|>"


def test_loss_mask_covers_exactly_the_action_and_end_of_turn(chat_tokenizer):
    tok = chat_tokenizer
    rec = synthetic_records(3)[1]
    r = pl.tokenize_record(tok, rec, "<|im_end|>", 512)
    assert r.truncated == 0
    assert list(r.prompt_ids) == encode_chat(tok, rec["messages"], add_generation_prompt=True)
    batch = pl.collate([r], (64, 128, 256, 512), tok.pad_token_id)
    mask = batch["loss_mask"][0] > 0
    trained = tok.decode(batch["targets"][0][mask])
    assert trained == rec["action_text"] + "<|im_end|>"
    # targets are the inputs shifted by one; padding carries no loss and no attention
    n = int(batch["attention_mask"][0].sum())
    np.testing.assert_array_equal(batch["targets"][0, : n - 1], batch["input_ids"][0, 1:n])
    assert not mask[n:].any()


def test_left_truncation_keeps_the_action_and_counts(chat_tokenizer, caplog):
    recs = synthetic_records(6)
    full = [pl.tokenize_record(chat_tokenizer, r, "<|im_end|>", 10_000) for r in recs]
    max_len = min(len(f.prompt_ids) + len(f.target_ids) for f in full) - 5
    with caplog.at_level("WARNING"):
        out, stats = pl.tokenize_records(chat_tokenizer, recs, max_len)
    assert stats.truncated == 6 and stats.truncated_tokens > 0 and "cut from the left" in caplog.text
    for f, o in zip(full, out):
        assert o.target_ids == f.target_ids
        assert o.prompt_ids == f.prompt_ids[-len(o.prompt_ids):]  # the right end of the prompt survives
        assert len(o.prompt_ids) + len(o.target_ids) - 1 == max_len


def test_records_whose_action_does_not_fit_are_dropped(chat_tokenizer):
    out, stats = pl.tokenize_records(chat_tokenizer, synthetic_records(4), 4)
    assert out == [] and stats.dropped == 4


def test_batches_are_bucketed_shuffled_and_restorable(chat_tokenizer, tmp_path):
    run = write_run_dir(tmp_path / "run", synthetic_records(20))
    it, stats = pl.build_input(run, chat_tokenizer, batch_size=4, buckets=(64, 128, 256), seed=3)
    assert stats.kept == 20
    batches = [next(it) for _ in range(3)]
    for b in batches:
        assert b["input_ids"].shape[0] == 4 and b["input_ids"].shape[1] in (64, 128, 256)
        assert b["input_ids"].dtype == np.int32 and b["loss_mask"].dtype == np.float32
    state = it.get_state()
    nxt = [next(it) for _ in range(6)]  # crosses an epoch boundary (5 batches per epoch)
    it2, _ = pl.build_input(run, chat_tokenizer, batch_size=4, buckets=(64, 128, 256), seed=3)
    it2.set_state(state)
    for a, b in zip(nxt, [next(it2) for _ in range(6)]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # a different seed gives a different order
    it3, _ = pl.build_input(run, chat_tokenizer, batch_size=4, buckets=(64, 128, 256), seed=4)
    assert not np.array_equal(next(it3)["reward"], batches[0]["reward"])


def test_processes_get_disjoint_shards(chat_tokenizer):
    examples, _ = pl.tokenize_records(chat_tokenizer, synthetic_records(12), 256)
    seen = []
    for i in range(3):
        ds = pl.make_dataset(examples, batch_size=4, buckets=(256,), pad_id=0, seed=0, process_index=i,
                             process_count=3)
        seen.append(sorted(np.asarray(ds[0]["reward"]).tolist()))
    flat = sorted(x for s in seen for x in s)
    assert flat == sorted(float(np.float32(e.reward)) for e in examples)


def test_too_few_examples_is_a_clear_error(chat_tokenizer):
    examples, _ = pl.tokenize_records(chat_tokenizer, synthetic_records(3), 256)
    with pytest.raises(ValueError, match="fewer than its batch size"):
        pl.make_dataset(examples, batch_size=4, buckets=(256,), pad_id=0, seed=0)


def test_process_blocks_share_the_global_bucket_and_concatenate_to_the_global_batch(chat_tokenizer):
    import dataclasses

    examples, _ = pl.tokenize_records(chat_tokenizer, synthetic_records(16), 256)
    # One long row: the process that does not hold it must still pad to its bucket.
    long = dataclasses.replace(examples[0], prompt_ids=examples[0].prompt_ids * 2)
    examples = [long] + examples[1:]
    length = lambda e: len(e.prompt_ids) + len(e.target_ids) - 1  # noqa: E731
    buckets = (max(length(e) for e in examples[1:]), length(long))
    whole = pl.make_dataset(examples, batch_size=8, buckets=buckets, pad_id=0, seed=3)
    parts = [pl.make_dataset(examples, batch_size=4, buckets=buckets, pad_id=0, seed=3, process_index=i,
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
    rows = [pl.tokenize_record(tok, r, "<|im_end|>", 512) for r in synthetic_records(3)]
    batch = pl.collate(rows, (64, 128, 256, 512), tok.pad_token_id, action_buckets=(4, 8, 16, 32, 64))
    longest = max(len(r.target_ids) for r in rows)
    a = batch["action_positions"].shape[1]
    assert a == min(b for b in (4, 8, 16, 32, 64) if b >= longest)
    for i in range(3):
        where = np.flatnonzero(batch["loss_mask"][i])
        k = int(batch["action_mask"][i].sum())
        assert k == len(where) == len(rows[i].target_ids)
        np.testing.assert_array_equal(batch["action_positions"][i, :k], where)
        assert not batch["action_positions"][i, k:].any()
        np.testing.assert_array_equal(batch["targets"][i, batch["action_positions"][i, :k]], rows[i].target_ids)


def test_action_length_is_a_bucket_capped_at_the_batch_length():
    assert pl.action_length(20, (32, 64), 512) == 32
    assert pl.action_length(20, (32, 64), 24) == 24  # never longer than the sequence
    assert pl.action_length(100, (32, 64), 512) == 512  # past the largest bucket: the whole row
    with pytest.raises(ValueError, match="row 0 has 3 action tokens"):
        pl.action_arrays(np.ones((1, 5), np.float32)[:, :3], 2)


def test_processes_agree_on_the_action_length(chat_tokenizer):
    tok = chat_tokenizer
    rows = [pl.tokenize_record(tok, r, "<|im_end|>", 512) for r in synthetic_records(4)]
    rows.sort(key=lambda r: len(r.target_ids))
    parts = [pl.collate_process_rows(rows, (128, 256, 512), tok.pad_token_id, i, 2, action_buckets=(4, 8, 16, 32, 64))
             for i in range(2)]
    assert parts[0]["action_positions"].shape == parts[1]["action_positions"].shape
    whole = pl.collate(rows, (128, 256, 512), tok.pad_token_id, action_buckets=(4, 8, 16, 32, 64))
    assert parts[0]["action_positions"].shape[1] == whole["action_positions"].shape[1]
