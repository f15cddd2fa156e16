"""Grain input for Stage 2: step records -> packed, tokenised, masked, bucketed, sharded batches.

Rows come from ``spark_jax.data.packing``: with packing (the default) one causal sequence per
trajectory carries all its actions as spans; without it, one row per record. Each step's
tokens are the chat template of ``messages`` with the generation prompt, then ``action_text``
plus the template's end-of-turn token(s). A batch is ``batch_size`` rows (trajectories when
packed, records when not), padded on the right to the smallest bucket that holds its longest
row, so a jitted step compiles once per bucket.

Batch arrays (B rows, T the bucket length, A action positions, S spans per row; ``targets``
are the inputs shifted by one, so ``logits[:, t]`` scores ``targets[:, t]``):

    input_ids        int32   [B, T]
    targets          int32   [B, T]
    attention_mask   int32   [B, T]   1 real token, 0 padding
    loss_mask        float32 [B, T]   1 where targets[:, t] is an action token (not sent to the step)
    action_positions int32   [B, A]   the positions t of a row's action tokens, in order (0-padded)
    action_mask      float32 [B, A]   1 on the real entries of ``action_positions``
    action_span      int32   [B, A]   the span (step) each action position belongs to
    span_start       int32   [B, S]   the position predicting the span's first token (end of its state)
    span_mask        float32 [B, S]   1 on real spans
    span_return      float32 [B, S]   the step's discounted return G_t (ppo.gamma)
    span_reward      float32 [B, S]   the step's own reward r_t
    span_kind        int32   [B, S]   0 tool, 1 cot, 2 answer
    span_step        int32   [B, S]   the step index t
    action_role      int32   [B, A]   ROLE_* of each action token: input text, header, shared format
    span_selected    int32   [B, S]   the chosen action's index in ``packing.ACTIONS`` (-1 unknown)
    span_cand_score  float32 [B, S, N] the judge's 0-10 score of each of the N = 10 actions (0: none)
    span_cand_mask   float32 [B, S, N] 1 where that action was judged at that step
    cand_rarity      float32 [B, N]   1 - the run's share of judged choices taking each action
    header_ids       int32   [B, H]   the N headers' tokens end to end (the same in every row)
    header_action    int32   [B, H]   which action each header token belongs to
    header_offset    int32   [B, H]   its index within its header
    header_mask      float32 [B, H]   1 on real header tokens (0 on padding)

A is the smallest of ``action_buckets`` that holds the batch's most action tokens in a row (at
most T): the train step projects only those A positions onto the vocabulary, not all T.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np

from spark_jax.core.shapes import bucket
from spark_jax.data.packing import ACTIONS, HeaderTokens, RowStats, TrainRow, build_rows, run_rarity
from spark_jax.protocol.records import read_step_records

log = logging.getLogger(__name__)

_PROBE = "\u2063SPARKJAXPROBE\u2063"


def end_of_turn_text(tokenizer: Any) -> str:
    """What the chat template writes after an assistant message's content (e.g. ``<|im_end|>``).

    Found by rendering a one-message assistant turn around a probe string, so it follows the
    model's own template (ChatML for SmolLM2, ``<|eot_id|>`` for Llama 3). Trailing
    whitespace is dropped: generation stops at the end-of-turn token, not after the newline.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "assistant", "content": _PROBE}], tokenize=False, add_generation_prompt=False
    )
    if _PROBE not in text:
        raise ValueError("the chat template does not render assistant content verbatim")
    tail = text.split(_PROBE, 1)[1].rstrip()
    if not tail:
        raise ValueError("the chat template writes nothing after an assistant message; no end-of-turn token")
    return tail


DEFAULT_ACTION_BUCKETS = (32, 64, 128, 256, 512)


def action_length(longest_action: int, action_buckets: Sequence[int], length: int) -> int:
    """A: the smallest action bucket >= ``longest_action`` (past the largest, a multiple of it),
    capped at the batch length T."""
    fitting = [b for b in sorted(action_buckets) if b >= longest_action]
    largest = max(action_buckets)
    return min(fitting[0] if fitting else -(-longest_action // largest) * largest, length)


def action_arrays(loss_mask_bt: np.ndarray, a: int) -> tuple[np.ndarray, np.ndarray]:
    """``action_positions`` int32 [B, A] and ``action_mask`` float32 [B, A] of a loss mask."""
    b = loss_mask_bt.shape[0]
    positions = np.zeros((b, a), np.int32)
    mask = np.zeros((b, a), np.float32)
    for i in range(b):
        where = np.flatnonzero(loss_mask_bt[i] > 0)
        if len(where) > a:
            raise ValueError(f"row {i} has {len(where)} action tokens, more than the action length {a}")
        positions[i, :len(where)] = where
        mask[i, :len(where)] = 1.0
    return positions, mask


def batch_shapes(rows: int, length: int, action_len: int, spans: int,
                 header_len: int = 80) -> dict[str, tuple[tuple[int, ...], Any]]:
    """(shape, dtype) of every batch array, for abstract batches (planner, benchmarks)."""
    n = len(ACTIONS)
    per = {"input_ids": (length, np.int32), "targets": (length, np.int32), "attention_mask": (length, np.int32),
           "action_positions": (action_len, np.int32), "action_mask": (action_len, np.float32),
           "action_span": (action_len, np.int32), "action_role": (action_len, np.int32),
           "span_selected": (spans, np.int32), "span_cand_score": ((spans, n), np.float32),
           "span_cand_mask": ((spans, n), np.float32), "cand_rarity": (n, np.float32)}
    per.update({k: (spans, dt) for k, dt in SPAN_DTYPES.items()})
    per.update({k: (header_len, dt) for k, dt in HEADER_DTYPES.items()})
    return {k: ((rows,) + (m if isinstance(m, tuple) else (m,)), dt) for k, (m, dt) in per.items()}


SPAN_DTYPES = {"span_start": np.int32, "span_mask": np.float32, "span_return": np.float32,
               "span_reward": np.float32, "span_kind": np.int32, "span_step": np.int32}
HEADER_DTYPES = {"header_ids": np.int32, "header_action": np.int32, "header_offset": np.int32,
                 "header_mask": np.float32}


def header_arrays(headers: HeaderTokens | None, rows: int) -> dict[str, np.ndarray]:
    """The ten headers laid end to end, repeated on every row ([rows, H]; H = 1 and all masked
    without headers)."""
    if headers is None:
        flat = {k: np.zeros((1,), dt) for k, dt in HEADER_DTYPES.items()}
    else:
        flat = {
            "header_ids": np.concatenate([np.asarray(h, np.int32) for h in headers.ids]),
            "header_action": np.concatenate([np.full(len(h), a, np.int32) for a, h in enumerate(headers.ids)]),
            "header_offset": np.concatenate([np.arange(len(h), dtype=np.int32) for h in headers.ids]),
        }
        flat["header_mask"] = np.ones(flat["header_ids"].shape, np.float32)
    return {k: np.broadcast_to(v, (rows,) + v.shape).copy() for k, v in flat.items()}


def collate(rows: Sequence[TrainRow], buckets: Sequence[int], pad_id: int,
            length: int | None = None, action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS,
            action_len: int | None = None, spans: int | None = None, headers: HeaderTokens | None = None,
            rarity: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Right-padded batch arrays (see module docstring) at the smallest fitting bucket, or at
    ``length``, ``action_len`` and ``spans`` (chosen for a larger batch these rows belong to).
    ``headers`` and ``rarity`` (``packing.run_rarity``) fill the candidate objective's arrays."""
    longest = max(r.length for r in rows)
    t = bucket(longest, buckets=tuple(buckets)) if length is None else length
    if longest > t:
        raise ValueError(f"a row of {longest} tokens does not fit the batch length {t}")
    if action_len is None:
        action_len = action_length(max(r.action_tokens for r in rows), action_buckets, t)
    s = max(len(r.spans) for r in rows) if spans is None else spans
    b = len(rows)
    input_ids = np.full((b, t), pad_id, np.int32)
    targets = np.full((b, t), pad_id, np.int32)
    attention = np.zeros((b, t), np.int32)
    loss_mask = np.zeros((b, t), np.float32)
    span_of = np.zeros((b, t), np.int32)
    role = np.zeros((b, t), np.int32)
    n_act = len(ACTIONS)
    out = {k: np.zeros((b, s), dt) for k, dt in SPAN_DTYPES.items()}
    out["span_selected"] = np.full((b, s), -1, np.int32)
    out["span_cand_score"] = np.zeros((b, s, n_act), np.float32)
    out["span_cand_mask"] = np.zeros((b, s, n_act), np.float32)
    for i, r in enumerate(rows):
        if len(r.spans) > s:
            raise ValueError(f"row {i} (question {r.question_id}) holds {len(r.spans)} spans, more than {s}")
        seq = np.asarray(r.token_ids, np.int32)
        n = len(seq) - 1
        input_ids[i, :n] = seq[:-1]
        targets[i, :n] = seq[1:]
        attention[i, :n] = 1
        for j, (start, end) in enumerate(r.spans):
            # position p reads token p and predicts token p + 1: span tokens [start, end) are
            # predicted at positions [start - 1, end - 1)
            loss_mask[i, start - 1:end - 1] = 1.0
            span_of[i, start - 1:end - 1] = j
            out["span_start"][i, j] = start - 1
            out["span_mask"][i, j] = 1.0
            out["span_return"][i, j] = r.returns[j]
            out["span_reward"][i, j] = r.rewards[j]
            out["span_kind"][i, j] = r.kinds[j]
            out["span_step"][i, j] = r.steps[j]
            if r.roles:
                role[i, start - 1:end - 1] = r.roles[j]
            if r.cand_scores:
                scores = np.asarray(r.cand_scores[j], np.float32)
                judged = np.isfinite(scores)
                out["span_cand_score"][i, j] = np.where(judged, scores, 0.0)
                out["span_cand_mask"][i, j] = judged
            if r.selected:
                out["span_selected"][i, j] = r.selected[j]
    positions, action_mask = action_arrays(loss_mask, action_len)
    action_span = np.take_along_axis(span_of, positions, axis=1) * (action_mask > 0)
    action_role = np.take_along_axis(role, positions, axis=1) * (action_mask > 0)
    rar = np.zeros(n_act, np.float32) if rarity is None else np.asarray(rarity, np.float32)
    return {"input_ids": input_ids, "targets": targets, "attention_mask": attention, "loss_mask": loss_mask,
            "action_positions": positions, "action_mask": action_mask, "action_span": action_span.astype(np.int32),
            "action_role": action_role.astype(np.int32), "cand_rarity": np.broadcast_to(rar, (b, n_act)).copy(),
            **out, **header_arrays(headers, b)}


def collate_process_rows(rows: Sequence[TrainRow], buckets: Sequence[int], pad_id: int,
                         process_index: int, process_count: int,
                         action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS,
                         spans: int | None = None, headers: HeaderTokens | None = None,
                         rarity: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """This process's contiguous block of a global batch, padded to the global batch's buckets,
    so that every process contributes arrays of the same shape to the same global step."""
    n = len(rows) // process_count
    t = bucket(max(r.length for r in rows), buckets=tuple(buckets))
    a = action_length(max(r.action_tokens for r in rows), action_buckets, t)
    s = max(len(r.spans) for r in rows) if spans is None else spans
    return collate(rows[process_index * n:(process_index + 1) * n], buckets, pad_id, length=t, action_len=a,
                   spans=s, headers=headers, rarity=rarity)


def make_dataset(
    examples: Sequence[TrainRow],
    *,
    batch_size: int,
    buckets: Sequence[int],
    pad_id: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS,
    headers: HeaderTokens | None = None,
    rarity: Sequence[float] | None = None,
) -> grain.MapDataset:
    """An endless, per-epoch reshuffled dataset of this process's batches of rows.

    ``batch_size`` is this process's share; the global batch is ``batch_size * process_count``
    rows. Every process walks the same shuffled order of global batches (same seed) and
    collates only its own block of rows (process ``i`` holds rows ``[i*b, (i+1)*b)``, matching
    ``jax.make_array_from_process_local_data`` over a mesh whose devices are ordered by
    process), padded to the bucket of the whole global batch. So processes never disagree on a
    step's shape, the data each process puts on its devices is disjoint, and N processes see
    exactly the global batches that one process with the same global batch size sees. The span
    axis S is the largest span count of any row, fixed for the run (one compilation per bucket).
    """
    if not examples:
        raise ValueError("no training examples (every record was dropped or the run is empty)")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, {process_count})")
    global_batch = batch_size * process_count
    if len(examples) < global_batch:
        raise ValueError(
            f"the run holds {len(examples)} training rows, fewer than its batch size {global_batch}"
            + (f" ({process_count} processes x {batch_size})" if process_count > 1 else "")
            + " (with packing, a row is a whole trajectory: lower batch_size or set packing=false)"
        )
    spans = max(len(r.spans) for r in examples)
    return (
        grain.MapDataset.source(list(examples)).shuffle(seed=seed)
        .repeat(None, reseed_each_epoch=True)
        .batch(global_batch, drop_remainder=True,
               batch_fn=lambda rows: collate_process_rows(rows, buckets, pad_id, process_index, process_count,
                                                          action_buckets, spans, headers, rarity))
    )


def pad_token_id(tokenizer: Any, fallback: int = 0) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, attr, None)
        if isinstance(v, int):
            return v
    return fallback


class BatchIterator:
    """Endless iterator over batches with a JSON-able, restorable position."""

    def __init__(self, dataset: grain.MapDataset):
        self._it = iter(dataset.to_iter_dataset())

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._it)

    def get_state(self) -> dict[str, Any]:
        return dict(self._it.get_state())

    def set_state(self, state: Mapping[str, Any]) -> None:
        self._it.set_state(dict(state))


def build_input(
    run_dir: str | pathlib.Path,
    tokenizer: Any,
    *,
    batch_size: int,
    buckets: Sequence[int],
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS,
    packing: bool = True,
    gamma: float = 1.0,
) -> tuple[BatchIterator, RowStats]:
    """Reads, tokenises, packs and batches a Stage 1 run directory."""
    records = read_step_records(run_dir)
    eot = end_of_turn_text(tokenizer)
    rows, stats = build_rows(tokenizer, records, eot, max(buckets), packing=packing, gamma=gamma)
    ds = make_dataset(rows, batch_size=batch_size, buckets=buckets, pad_id=pad_token_id(tokenizer),
                      seed=seed, process_index=process_index, process_count=process_count,
                      action_buckets=action_buckets, headers=HeaderTokens.of(tokenizer, eot),
                      rarity=run_rarity(records))
    return BatchIterator(ds), stats
