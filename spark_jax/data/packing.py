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
import math
from typing import Any, Mapping, Sequence

from spark_jax.protocol.actions import ANSWER
from spark_jax.protocol.chat import encode_chat
from spark_jax.protocol.prompts import candidate_actions

log = logging.getLogger(__name__)

# Step kinds, as stored per span: tool calls, chain-of-thought, and the final answer.
KIND_TOOL, KIND_COT, KIND_ANSWER = 0, 1, 2
KIND_NAMES = ("tool", "cot", "answer")
# The ten choices of the policy (the nine judged candidates, then answer), in score mode's order.
ACTIONS: tuple[str, ...] = candidate_actions() + (ANSWER,)
# Roles of an action span's tokens: the input text, the header's action-specific tokens, the
# header tokens every header shares (its common prefix and suffix), and the end-of-turn token(s).
# The shared format tokens are ROLE_FORMAT and ROLE_EOT.
ROLE_INPUT, ROLE_HEADER, ROLE_FORMAT, ROLE_EOT = 0, 1, 2, 3


def header_text(name: str) -> str:
    """The header score mode writes before an action's input (its tokens are scored as one unit)."""
    return f"Action: {name}\nInput:"


def header_ids(tokenizer: Any, name: str) -> list[int]:
    return list(tokenizer(header_text(name), add_special_tokens=False)["input_ids"])


@dataclasses.dataclass(frozen=True)
class HeaderTokens:
    """The ten headers' token ids and the length of the prefix and suffix they all share."""

    ids: tuple[tuple[int, ...], ...]
    shared_prefix: int
    shared_suffix: int
    eot_len: int

    @classmethod
    def of(cls, tokenizer: Any, eot_text: str) -> "HeaderTokens":
        ids = tuple(tuple(header_ids(tokenizer, n)) for n in ACTIONS)
        shortest = min(len(h) for h in ids)
        pre = next((i for i in range(shortest) if len({h[i] for h in ids}) > 1), shortest)
        suf = next((i for i in range(shortest - pre) if len({h[len(h) - 1 - i] for h in ids}) > 1), shortest - pre)
        eot = len(tokenizer(eot_text, add_special_tokens=False)["input_ids"])
        return cls(ids, pre, suf, eot)

    def roles(self, selected: str, target: Sequence[int]) -> tuple[int, ...]:
        """ROLE_* of each token of an action's target (header, input text, end of turn).

        The header is the longest prefix of ``target`` that matches the selected action's header
        tokens (all of it unless the tokenizer merges across the header's end)."""
        head = self.ids[ACTIONS.index(selected)] if selected in ACTIONS else ()
        n = 0
        while n < min(len(head), len(target)) and head[n] == target[n]:
            n += 1
        roles = [ROLE_INPUT] * len(target)
        for i in range(n):
            shared = i < self.shared_prefix or (n == len(head) and i >= len(head) - self.shared_suffix)
            roles[i] = ROLE_FORMAT if shared else ROLE_HEADER
        for i in range(max(n, len(target) - self.eot_len), len(target)):
            roles[i] = ROLE_EOT
        return tuple(roles)


def candidate_scores(record: Mapping[str, Any]) -> tuple[float, ...]:
    """The judge's score of each of the ten ACTIONS at this step (NaN: not judged)."""
    by_name = {c["action"]: float(c["score"]) for c in record.get("candidates") or ()}
    return tuple(by_name.get(a, math.nan) for a in ACTIONS)


def run_rarity(records: Sequence[Mapping[str, Any]]) -> tuple[float, ...]:
    """1 - the share of the run's judged choices that took each of the ten ACTIONS.

    Stage 1 records store the rarity of the chosen action only, at its selection time; this is
    the same quantity over the whole run, for every candidate alike."""
    chosen = collections.Counter(r["selected"] for r in records if r.get("candidates"))
    total = sum(chosen.values())
    return tuple(1.0 - (chosen[a] / total if total else 0.0) for a in ACTIONS)


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
    roles: tuple[tuple[int, ...], ...] = ()  # per span, ROLE_* of each of its tokens (empty: all input)
    cand_scores: tuple[tuple[float, ...], ...] = ()  # per span, the judge's score of each of ACTIONS (NaN: none)
    selected: tuple[int, ...] = ()  # per span, the index of the chosen action in ACTIONS (-1: unknown)

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


def _meta(rec: Mapping[str, Any], ret: float, t: int, target: Sequence[int], headers: HeaderTokens | None) -> tuple:
    """(return, reward, kind, step, roles, candidate scores, selected index) of one step."""
    roles = headers.roles(rec["selected"], target) if headers is not None else (ROLE_INPUT,) * len(target)
    sel = ACTIONS.index(rec["selected"]) if rec["selected"] in ACTIONS else -1
    return ret, float(rec["reward"]), step_kind(rec["selected"]), t, roles, candidate_scores(rec), sel


def _row(seq: Sequence[int], spans, steps_meta, question_id, truncated=0) -> TrainRow:
    fields = [tuple(m[i] for m in steps_meta) for i in range(7)]
    return TrainRow(tuple(seq), tuple(spans), *fields[:4], question_id=question_id, truncated=truncated,
                    roles=fields[4], cand_scores=fields[5], selected=fields[6])


def pack_trajectory(tokenizer: Any, steps: Sequence[Mapping[str, Any]], eot_text: str, max_len: int,
                    gamma: float, stats: RowStats, headers: HeaderTokens | None = None) -> list[TrainRow]:
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
        meta.append(_meta(rec, returns[t], t, target, headers))
    rows.append(_row(seq, spans, meta, qid))
    return rows


def unpacked_rows(tokenizer: Any, steps: Sequence[Mapping[str, Any]], eot_text: str, max_len: int,
                  gamma: float, stats: RowStats, headers: HeaderTokens | None = None) -> list[TrainRow]:
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
        meta = [_meta(rec, returns[t], t, target, headers)]
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
    headers = HeaderTokens.of(tokenizer, eot_text)
    for steps in groups:
        rows += make(tokenizer, steps, eot_text, max_len, gamma, stats, headers)
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
