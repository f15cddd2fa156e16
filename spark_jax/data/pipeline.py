"""Grain input for Stage 2: step records -> tokenised, masked, bucketed, sharded batches.

Each record (``spark_jax.rollout.records``) becomes one sequence:

    prompt = chat template of ``messages`` with the generation prompt
    target = ``action_text`` + the template's end-of-turn token(s)

``loss_mask`` is 1 exactly on the target tokens. Over-long sequences lose prompt tokens from
the left (counted and logged); a record whose target alone exceeds the longest bucket is
dropped (counted and logged). A batch is padded on the right to the smallest bucket that
holds its longest row, so a jitted step compiles once per bucket.

Batch arrays (B rows, T the bucket length; ``targets`` are the inputs shifted by one, so
``logits[:, t]`` scores ``targets[:, t]``):

    input_ids       int32   [B, T]
    targets         int32   [B, T]
    attention_mask  int32   [B, T]   1 real token, 0 padding
    loss_mask       float32 [B, T]   1 where targets[:, t] is an action token
    reward          float32 [B]
    action_positions int32  [B, A]   the positions t of a row's action tokens, in order (0-padded)
    action_mask     float32 [B, A]   1 on the real entries of ``action_positions``

A is the smallest of ``action_buckets`` that holds the batch's longest action (at most T): the
train step projects only those A positions onto the vocabulary, not all T (actions are a few
dozen tokens of states of hundreds).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np

from spark_jax.data.chat import encode_chat
from spark_jax.rollout.records import read_step_records
from spark_jax.shapes import bucket

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


@dataclasses.dataclass(frozen=True)
class TokenizedRecord:
    """One record as token ids: ``prompt_ids`` then ``target_ids`` (the trained tokens)."""

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    reward: float
    truncated: int  # prompt tokens dropped from the left


def tokenize_record(tokenizer: Any, record: Mapping[str, Any], eot_text: str, max_len: int) -> TokenizedRecord | None:
    """Token ids of one record; None if its target alone does not fit in ``max_len``."""
    prompt = encode_chat(tokenizer, record["messages"], add_generation_prompt=True)
    target = list(tokenizer(record["action_text"] + eot_text, add_special_tokens=False)["input_ids"])
    if len(target) >= max_len:
        return None
    # The sequence fed to the model is prompt + target minus its final token (the last
    # target token is predicted, never an input), so prompt + target may be max_len + 1.
    keep = max_len + 1 - len(target)
    dropped = max(0, len(prompt) - keep)
    return TokenizedRecord(tuple(prompt[dropped:]), tuple(target), float(record["reward"]), dropped)


@dataclasses.dataclass
class TokenizeStats:
    records: int = 0
    kept: int = 0
    truncated: int = 0  # records that lost prompt tokens
    truncated_tokens: int = 0
    dropped: int = 0  # records whose action alone exceeds the longest bucket


def tokenize_records(
    tokenizer: Any, records: Sequence[Mapping[str, Any]], max_len: int
) -> tuple[list[TokenizedRecord], TokenizeStats]:
    eot = end_of_turn_text(tokenizer)
    out, stats = [], TokenizeStats(records=len(records))
    for rec in records:
        tok = tokenize_record(tokenizer, rec, eot, max_len)
        if tok is None:
            stats.dropped += 1
            continue
        if tok.truncated:
            stats.truncated += 1
            stats.truncated_tokens += tok.truncated
        out.append(tok)
    stats.kept = len(out)
    if stats.truncated:
        log.warning("%d of %d records were longer than %d tokens: %d prompt tokens cut from the left",
                    stats.truncated, stats.records, max_len, stats.truncated_tokens)
    if stats.dropped:
        log.warning("%d of %d records dropped: their action alone exceeds %d tokens",
                    stats.dropped, stats.records, max_len)
    return out, stats


DEFAULT_ACTION_BUCKETS = (32, 64, 128, 256, 512)


def action_length(longest_action: int, action_buckets: Sequence[int], length: int) -> int:
    """A: the smallest action bucket >= ``longest_action``, capped at the batch length T."""
    fitting = [b for b in sorted(action_buckets) if b >= longest_action]
    return min(fitting[0], length) if fitting else length


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


def collate(rows: Sequence[TokenizedRecord], buckets: Sequence[int], pad_id: int,
            length: int | None = None, action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS,
            action_len: int | None = None) -> dict[str, np.ndarray]:
    """Right-padded batch arrays (see module docstring) at the smallest fitting bucket, or at
    ``length`` and ``action_len`` (chosen for a larger batch that these rows belong to)."""
    lengths = [len(r.prompt_ids) + len(r.target_ids) - 1 for r in rows]
    t = bucket(max(lengths), buckets=tuple(buckets)) if length is None else length
    if max(lengths) > t:
        raise ValueError(f"a row of {max(lengths)} tokens does not fit the batch length {t}")
    if action_len is None:
        action_len = action_length(max(len(r.target_ids) for r in rows), action_buckets, t)
    b = len(rows)
    input_ids = np.full((b, t), pad_id, np.int32)
    targets = np.full((b, t), pad_id, np.int32)
    attention = np.zeros((b, t), np.int32)
    loss_mask = np.zeros((b, t), np.float32)
    for i, r in enumerate(rows):
        seq = np.asarray(r.prompt_ids + r.target_ids, np.int32)
        n = len(seq) - 1
        input_ids[i, :n] = seq[:-1]
        targets[i, :n] = seq[1:]
        attention[i, :n] = 1
        loss_mask[i, len(r.prompt_ids) - 1:n] = 1.0
    reward = np.asarray([r.reward for r in rows], np.float32)
    positions, action_mask = action_arrays(loss_mask, action_len)
    return {"input_ids": input_ids, "targets": targets, "attention_mask": attention,
            "loss_mask": loss_mask, "reward": reward, "action_positions": positions, "action_mask": action_mask}


def collate_process_rows(rows: Sequence[TokenizedRecord], buckets: Sequence[int], pad_id: int,
                         process_index: int, process_count: int,
                         action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS) -> dict[str, np.ndarray]:
    """This process's contiguous block of a global batch, padded to the global batch's buckets,
    so that every process contributes arrays of the same shape to the same global step."""
    n = len(rows) // process_count
    longest = max(len(r.prompt_ids) + len(r.target_ids) - 1 for r in rows)
    t = bucket(longest, buckets=tuple(buckets))
    a = action_length(max(len(r.target_ids) for r in rows), action_buckets, t)
    return collate(rows[process_index * n:(process_index + 1) * n], buckets, pad_id, length=t, action_len=a)


def make_dataset(
    examples: Sequence[TokenizedRecord],
    *,
    batch_size: int,
    buckets: Sequence[int],
    pad_id: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    action_buckets: Sequence[int] = DEFAULT_ACTION_BUCKETS,
) -> grain.MapDataset:
    """An endless, per-epoch reshuffled dataset of this process's batches.

    ``batch_size`` is this process's share; the global batch is ``batch_size * process_count``
    rows. Every process walks the same shuffled order of global batches (same seed) and
    collates only its own block of rows (process ``i`` holds rows ``[i*b, (i+1)*b)``, matching
    ``jax.make_array_from_process_local_data`` over a mesh whose devices are ordered by
    process), padded to the bucket of the whole global batch. So processes never disagree on a
    step's shape, the data each process puts on its devices is disjoint, and N processes see
    exactly the global batches that one process with the same global batch size sees.
    """
    if not examples:
        raise ValueError("no training examples (every record was dropped or the run is empty)")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, {process_count})")
    global_batch = batch_size * process_count
    if len(examples) < global_batch:
        raise ValueError(
            f"the run holds {len(examples)} examples, fewer than its batch size {global_batch}"
            + (f" ({process_count} processes x {batch_size})" if process_count > 1 else "")
        )
    return (
        grain.MapDataset.source(list(examples)).shuffle(seed=seed)
        .repeat(None, reseed_each_epoch=True)
        .batch(global_batch, drop_remainder=True,
               batch_fn=lambda rows: collate_process_rows(rows, buckets, pad_id, process_index, process_count,
                                                          action_buckets))
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
) -> tuple[BatchIterator, TokenizeStats]:
    """Reads, tokenises and batches a Stage 1 run directory."""
    records = read_step_records(run_dir)
    examples, stats = tokenize_records(tokenizer, records, max(buckets))
    ds = make_dataset(examples, batch_size=batch_size, buckets=buckets, pad_id=pad_token_id(tokenizer),
                      seed=seed, process_index=process_index, process_count=process_count,
                      action_buckets=action_buckets)
    return BatchIterator(ds), stats
