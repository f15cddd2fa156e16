"""Shared by the packing tests: action log-probs of packed rows against unpacked records."""

from __future__ import annotations

import numpy as np

from spark_jax.data.packing import build_rows
from spark_jax.data.pipeline import collate, end_of_turn_text


def action_logprobs(pretrained, rows, buckets):
    """Per row, per span: the float32 log-probs of the span's tokens under ``pretrained``."""
    batch = collate(rows, buckets, pretrained.tokenizer.pad_token_id or 0)
    logits = np.asarray(pretrained.logits(batch["input_ids"], batch["attention_mask"]), np.float64)
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    picked = np.take_along_axis(logp, batch["targets"][..., None].astype(np.int64), -1)[..., 0]
    out = []
    for i, row in enumerate(rows):
        out.append([picked[i, start - 1:end - 1] for start, end in row.spans])
    return out


def max_span_difference(pretrained, records, buckets=(256, 512, 1024, 2048)):
    """(max |log-prob difference| over every action token, packed rows, records)."""
    tok = pretrained.tokenizer
    eot = end_of_turn_text(tok)
    packed, pstats = build_rows(tok, records, eot, max(buckets), packing=True, gamma=1.0)
    single, _ = build_rows(tok, records, eot, max(buckets), packing=False, gamma=1.0)
    assert pstats.broken_boundaries == 0 and len(packed) < len(single)
    got = [span for row in action_logprobs(pretrained, packed, buckets) for span in row]
    want = [row[0] for row in action_logprobs(pretrained, single, buckets)]
    assert len(got) == len(want) == len(records)
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want)), len(packed), len(single)
