"""Training rows from step records: one packed causal sequence per trajectory, or one row per record.

A question's K step records share their prefixes: the tokens of step t (its state with the
generation prompt, then its action and end-of-turn) begin step t + 1's state. So one sequence,
the last step's, carries every action of the trajectory, each as its own *span* with its own
return; the log-probs of each span equal those of the unpacked record (tested).

The prefix property is checked at every step boundary with the real tokenizer. Where it breaks
(a chat template that rewrites earlier turns), the next step starts a new row from its own full
state, so such a template falls back to one row per record, with a warning naming it. Nothing
is cut from the left in packed rows: a step whose own sequence exceeds the longest bucket is an
error naming the question. Unpacked rows (``packing: false``) keep the old behaviour: over-long
states lose prompt tokens from the left, counted and logged.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Mapping, Sequence

from spark_jax.protocol.actions import ANSWER
from spark_jax.protocol.chat import encode_chat

log = logging.getLogger(__name__)

# Step kinds, as stored per span: tool calls, chain-of-thought, and the final answer.
KIND_TOOL, KIND_COT, KIND_ANSWER = 0, 1, 2
KIND_NAMES = ("tool", "cot", "answer")


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """G_t = r_t + gamma * G_{t+1} over one trajectory's step rewards (gamma 0: G_t = r_t)."""
    out, g = [], 0.0
    for r in reversed(rewards):
        g = float(r) + gamma * g
        out.append(g)
    return out[::-1]


def step_kind(selected: str) -> int:
    if selected == ANSWER:
        return KIND_ANSWER
    return KIND_COT if selected == "cot" else KIND_TOOL


class PackingError(ValueError):
    """A trajectory that cannot become training rows; the message names the question."""


@dataclasses.dataclass(frozen=True)
class TrainRow:
    """One training sequence and the action spans in it.

    ``token_ids`` is the whole sequence (inputs are ``[:-1]``, targets ``[1:]``); span i covers
    ``token_ids[start:end]`` with ``(start, end) = spans[i]`` and carries the step's discounted
    return, raw reward, kind (KIND_*) and step index.
    """

    token_ids: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    returns: tuple[float, ...]
    rewards: tuple[float, ...]
    kinds: tuple[int, ...]
    steps: tuple[int, ...]
    question_id: int = -1
    truncated: int = 0  # prompt tokens cut from the left (unpacked rows only)

    @property
    def length(self) -> int:
        """Model inputs: the sequence minus its last token (predicted, never read)."""
        return len(self.token_ids) - 1

    @property
    def action_tokens(self) -> int:
        return sum(e - s for s, e in self.spans)


@dataclasses.dataclass
class RowStats:
    records: int = 0
    trajectories: int = 0
    rows: int = 0
    kept_records: int = 0
    packed_boundaries: int = 0  # step boundaries joined into one sequence
    broken_boundaries: int = 0  # boundaries where the next state does not extend the last sequence
    truncated: int = 0  # unpacked rows that lost prompt tokens
    truncated_tokens: int = 0
    dropped: int = 0  # unpacked records whose action alone exceeds the longest bucket
    tokens: int = 0  # model input tokens over all rows (before bucket padding)


def trajectories(records: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Records grouped by question, ordered by step; every question must hold steps 0..K-1."""
    by_question: dict[Any, list] = collections.defaultdict(list)
    for rec in records:
        by_question[rec["question_id"]].append(rec)
    out = []
    for qid, steps in by_question.items():
        steps.sort(key=lambda r: r["step"])
        found = [r["step"] for r in steps]
        if found != list(range(len(steps))):
            raise PackingError(f"question {qid}: steps {found} are not 0..{len(steps) - 1} exactly once; "
                               "the Stage 1 run is incomplete or holds duplicates")
        out.append(steps)
    return out


def _step_tokens(tokenizer: Any, record: Mapping[str, Any], eot_text: str) -> tuple[list[int], list[int]]:
    prompt = encode_chat(tokenizer, record["messages"], add_generation_prompt=True)
    target = list(tokenizer(record["action_text"] + eot_text, add_special_tokens=False)["input_ids"])
    return prompt, target


def _row(seq: Sequence[int], spans, steps_meta, question_id, truncated=0) -> TrainRow:
    return TrainRow(tuple(seq), tuple(spans), *(tuple(m[i] for m in steps_meta) for i in range(4)),
                    question_id=question_id, truncated=truncated)


def pack_trajectory(tokenizer: Any, steps: Sequence[Mapping[str, Any]], eot_text: str, max_len: int,
                    gamma: float, stats: RowStats) -> list[TrainRow]:
    """The rows of one trajectory: as few causal sequences as the prefix property allows."""
    qid = steps[0]["question_id"]
    returns = discounted_returns([float(r["reward"]) for r in steps], gamma)
    rows: list[TrainRow] = []
    seq: list[int] = []
    spans: list[tuple[int, int]] = []
    meta: list[tuple] = []
    for t, rec in enumerate(steps):
        prompt, target = _step_tokens(tokenizer, rec, eot_text)
        if len(prompt) + len(target) - 1 > max_len:
            raise PackingError(
                f"question {qid} step {t}: its state and action take {len(prompt) + len(target) - 1} tokens, more "
                f"than the longest bucket {max_len}; add a larger seq_bucket (packed rows are never cut from "
                "the left) or train with packing=false, which cuts over-long states from the left")
        if seq:
            if prompt[:len(seq)] == seq:
                stats.packed_boundaries += 1
            else:
                stats.broken_boundaries += 1
                rows.append(_row(seq, spans, meta, qid))
                seq, spans, meta = [], [], []
        start = len(prompt)
        seq = prompt + target
        spans.append((start, len(seq)))
        meta.append((returns[t], float(rec["reward"]), step_kind(rec["selected"]), t))
    rows.append(_row(seq, spans, meta, qid))
    return rows


def unpacked_rows(tokenizer: Any, steps: Sequence[Mapping[str, Any]], eot_text: str, max_len: int,
                  gamma: float, stats: RowStats) -> list[TrainRow]:
    """One row per record; over-long states lose prompt tokens from the left (counted)."""
    returns = discounted_returns([float(r["reward"]) for r in steps], gamma)
    rows = []
    for t, rec in enumerate(steps):
        prompt, target = _step_tokens(tokenizer, rec, eot_text)
        if len(target) >= max_len:
            stats.dropped += 1
            continue
        # inputs are prompt + target minus its last token, so prompt + target may be max_len + 1
        dropped = max(0, len(prompt) - (max_len + 1 - len(target)))
        if dropped:
            stats.truncated += 1
            stats.truncated_tokens += dropped
        prompt = prompt[dropped:]
        meta = [(returns[t], float(rec["reward"]), step_kind(rec["selected"]), t)]
        rows.append(_row(prompt + target, [(len(prompt), len(prompt) + len(target))], meta,
                         rec["question_id"], dropped))
    return rows


def _template_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def build_rows(tokenizer: Any, records: Sequence[Mapping[str, Any]], eot_text: str, max_len: int, *,
               packing: bool, gamma: float) -> tuple[list[TrainRow], RowStats]:
    """Training rows of a Stage 1 run's records, and what happened to them."""
    stats = RowStats(records=len(records))
    rows: list[TrainRow] = []
    groups = trajectories(records)
    stats.trajectories = len(groups)
    make = pack_trajectory if packing else unpacked_rows
    for steps in groups:
        rows += make(tokenizer, steps, eot_text, max_len, gamma, stats)
    stats.rows = len(rows)
    stats.kept_records = sum(len(r.spans) for r in rows)
    stats.tokens = sum(r.length for r in rows)
    if stats.broken_boundaries:
        log.warning("the chat template of %s rewrites earlier turns: at %d of %d step boundaries the next state "
                    "does not extend the previous step's tokens, so those steps train as separate rows "
                    "(unpacked)", _template_name(tokenizer), stats.broken_boundaries,
                    stats.broken_boundaries + stats.packed_boundaries)
    if stats.truncated:
        log.warning("%d of %d records were longer than %d tokens: %d prompt tokens cut from the left",
                    stats.truncated, stats.records, max_len, stats.truncated_tokens)
    if stats.dropped:
        log.warning("%d of %d records dropped: their action alone exceeds %d tokens",
                    stats.dropped, stats.records, max_len)
    return rows, stats
