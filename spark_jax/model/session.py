"""A batch of growing prompts kept in one KV cache: append, score continuations, decode.

An agent's state grows by a few messages per step; re-running the whole state each step
(system prompt, question, earlier actions and observations) was most of an evaluation's time.
A ``DecodeSession`` holds the cache of every row's state so far and only runs what is new:

* ``extend`` appends each row's new tokens (one left-padded [B, T] block after the cache);
* ``score`` gives the log-probs of N short continuations (the action headers, or the option
  letters after ``The answer is (``) for the rows asked: all N in one pass, as a tree (their
  common prefix once, then each one's rest, each reading the prefix and its own tokens only),
  on a copy of those rows' live slots;
* ``generate`` samples for the rows asked, after optional per-row prompt tokens (the chosen
  header), on such a copy, so the session's cache is unchanged and the caller appends the text
  it keeps (re-rendered by the chat template) rather than the raw sample.

Rows not asked (finished episodes, or ones that write no input) cost nothing in ``score`` and
``generate``: the rows asked are gathered into a smaller batch (a power of two, at least a quarter
of the session's rows).

Slots are [system prompt | block | block | ...]; each block is left-padded, padding slots are
invalid and RoPE positions count real tokens only, so a row attends to exactly its own tokens
and the result equals one prefill of the row's whole state (up to float summation order).
Every pass reads only the live slots (the filled ones and its own, rounded up to ``LIVE_STEP``),
not the cache's whole capacity. Compiled shapes: one per (rows, slots, block, live) bucket; slots
grow in steps of ``SLOT_STEP``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spark_jax.core.shapes import bucket, length_bucket
from spark_jax.model import generate as gen
from spark_jax.model.llama import KVCache

SLOT_STEP = 512
# Passes read only the cache's first ``live`` slots, the slots they need rounded up to this step
# (a static size: one compiled shape per step), not the whole capacity.
LIVE_STEP = 256
# A block is padded to its longest row, and on a CPU a bigger batch does not make a prefill
# cheaper: rows of a block longer than ``SHORT_BLOCK`` are sorted by length and run in groups of
# this many, each group in the same slots (left-aligned there; the slots after a short row stay
# invalid), padded to a finer bucket (``LONG_STEPS`` per octave). Pairs waste less padding than
# fours and cost fewer calls than single rows (benchmarks/score_mode_speed.py's prefill phase).
GROUP_ROWS = 2
LONG_STEPS = 4
# Blocks no longer than this (an action header, the answer's lead) run as one [B, T] pass: the
# groups' gathers and per-group calls would cost more than their padding saves. Short blocks are
# bucketed from 8 tokens (headers are 6 or 7), longer ones from 16.
SHORT_BLOCK = 16


def _init(graphdef, state, prefix: KVCache, *, rows: int, slots: int):
    """``rows`` copies of the one-row prefix cache with ``slots`` slots, the state after it."""
    grown = prefix.grown(slots)
    widen = lambda x: jnp.broadcast_to(x, (rows,) + x.shape[1:])  # noqa: E731
    cache = KVCache(tuple(map(widen, grown.keys)), tuple(map(widen, grown.values)), widen(grown.valid_bs), grown.index)
    d = nnx.merge(graphdef, state).config.hidden_size
    c = prefix.valid_bs.shape[1]
    return cache, jnp.zeros((rows, 1, d), jnp.float32), jnp.full((rows,), c, jnp.int32)


def _grow(cache: KVCache, slots: int) -> KVCache:
    return cache.grown(slots)


def _live(cache: KVCache, live: int) -> KVCache:
    """The cache's first ``live`` slots (a copy; the rest is empty room nothing reads)."""
    return KVCache(tuple(k[..., :live] for k in cache.keys), tuple(v[:, :, :live] for v in cache.values),
                   cache.valid_bs[:, :live], cache.index)


def _rows(cache: KVCache, last_hidden_b1d, next_pos_b, rows_g, live: int):
    """Rows ``rows_g`` of the session (a copy of their first ``live`` slots, last hidden, next position)."""
    sub = KVCache(tuple(k[rows_g] for k in cache.keys), tuple(v[rows_g] for v in cache.values),
                  cache.valid_bs[rows_g], cache.index)
    return _live(sub, live), last_hidden_b1d[rows_g], next_pos_b[rows_g]


def _extend(graphdef, live: int, state, cache: KVCache, last_hidden_b1d, next_pos_b, ids_bt, mask_bt):
    model = nnx.merge(graphdef, state)
    positions = next_pos_b[:, None] + jnp.cumsum(mask_bt, axis=1, dtype=jnp.int32) - 1
    hidden, cache = model.hidden_states(ids_bt, positions, mask_bt, cache, live_slots=live)
    fresh = mask_bt.astype(jnp.bool_).any(axis=1)
    last = jnp.where(fresh[:, None, None], hidden[:, -1:, :].astype(last_hidden_b1d.dtype), last_hidden_b1d)
    return cache, last, next_pos_b + mask_bt.astype(jnp.int32).sum(axis=1)


def _extend_rows(graphdef, live: int, state, cache: KVCache, last_hidden_b1d, next_pos_b, rows_g, ids_gt, mask_gt,
                 end):
    """``_extend`` for the G rows ``rows_g`` only, right-padded [G, T] tokens written from the
    cache's index; the cache's index becomes ``end``. Other rows are unchanged.

    The group's first ``live`` slots are gathered (attention reads no empty room), and only the
    T new slots of each group row are written back, one in-place slice per row (a scatter of
    whole cache rows copied the cache once per group, however few its tokens)."""
    model = nnx.merge(graphdef, state)
    index, t, g = cache.index, ids_gt.shape[1], rows_g.shape[0]
    sub, _, pos_g = _rows(cache, last_hidden_b1d, next_pos_b, rows_g, live)
    positions = pos_g[:, None] + jnp.cumsum(mask_gt, axis=1, dtype=jnp.int32) - 1
    hidden, sub = model.hidden_states(ids_gt, positions, mask_gt, sub)

    def put(full, part, axis):
        new = jax.lax.dynamic_slice_in_dim(part, index, t, axis=axis)
        for i in range(g):
            start = [rows_g[i]] + [index if a == axis else 0 for a in range(1, full.ndim)]
            full = jax.lax.dynamic_update_slice(full, new[i:i + 1], start)
        return full

    cache = KVCache(tuple(put(f, p, 3) for f, p in zip(cache.keys, sub.keys)),
                    tuple(put(f, p, 2) for f, p in zip(cache.values, sub.values)),
                    put(cache.valid_bs, sub.valid_bs, 1), end)
    count = mask_gt.astype(jnp.int32).sum(axis=1)  # right-padded: row i's last token is at count - 1
    at_last = jnp.take_along_axis(hidden, jnp.maximum(count - 1, 0)[:, None, None], axis=1)
    old = last_hidden_b1d[rows_g]
    last = last_hidden_b1d.at[rows_g].set(jnp.where((count > 0)[:, None, None], at_last.astype(old.dtype), old))
    return cache, last, next_pos_b.at[rows_g].add(count)


def _score(graphdef, live: int, state, cache: KVCache, last_hidden_b1d, next_pos_b, rows_g, ids_m, offset_m,
           allowed_mm, source_m, take_nh, cmask_nh):
    """Log-probs [G, N, H] of N continuations after rows ``rows_g``'s states, all in one [G, M] pass.

    The block holds the continuations' common prefix once, then each one's remaining tokens
    side by side (a tree): ``allowed_mm`` lets a token read the prefix and its own branch only,
    ``offset_m`` is its position after the state. Token m is predicted from block position
    ``source_m[m] - 1`` (0: the state's last hidden state); ``take_nh`` maps continuation tokens
    to block positions. Runs on a copy of the rows' live slots: the session's cache is not written."""
    model = nnx.merge(graphdef, state)
    cache, last_hidden_b1d, next_pos_b = _rows(cache, last_hidden_b1d, next_pos_b, rows_g, live)
    g, m = rows_g.shape[0], ids_m.shape[0]
    ids = jnp.broadcast_to(ids_m, (g, m))
    hidden, _ = model.hidden_states(ids, next_pos_b[:, None] + offset_m[None, :], jnp.ones((g, m), jnp.bool_), cache,
                                    allowed_btt=jnp.broadcast_to(allowed_mm, (g, m, m)))
    before = jnp.concatenate([last_hidden_b1d.astype(hidden.dtype), hidden], axis=1)[:, source_m]
    logits = model.project(before)
    picked = jnp.take_along_axis(logits, ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
    lp_gm = picked - jax.nn.logsumexp(logits, axis=-1)
    return lp_gm[:, take_nh] * cmask_nh.astype(jnp.float32)[None]


def tree_block(continuations: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Host-side layout of N continuations as one tree block (see ``_score``): their longest
    common prefix once, then each one's rest, padded to a length bucket of M tokens."""
    conts = [list(map(int, c)) for c in continuations]
    common = 0
    while all(len(c) > common for c in conts) and len({c[common] for c in conts}) == 1:
        common += 1
    total = common + sum(len(c) - common for c in conts)
    m = length_bucket(total, minimum=8)
    ids, offset = np.zeros(m, np.int32), np.zeros(m, np.int32)
    source = np.zeros(m, np.int32)
    allowed = np.eye(m, dtype=bool)  # padding tokens read only themselves
    h = bucket(max(map(len, conts)), minimum=8)
    take, cmask = np.zeros((len(conts), h), np.int32), np.zeros((len(conts), h), np.int32)
    ids[:common] = conts[0][:common]
    offset[:common] = np.arange(common)
    source[:common] = np.arange(common)  # token i is predicted from position i - 1 (0: the state)
    allowed[:common, :common] = np.tril(np.ones((common, common), bool))
    at = common
    for n, c in enumerate(conts):
        rest = len(c) - common
        span = slice(at, at + rest)
        ids[span] = c[common:]
        offset[span] = np.arange(common, len(c))
        source[span] = [common] + list(range(at + 1, at + rest)) if rest else []
        allowed[span, :common] = True
        allowed[span, span] = np.tril(np.ones((rest, rest), bool))
        take[n, :len(c)] = list(range(common)) + list(range(at, at + rest))
        cmask[n, :len(c)] = 1
        at += rest
    return {"ids": ids, "offset": offset, "allowed": allowed, "source": source, "take": take, "cmask": cmask}


def _next_token(graphdef, state, last_hidden_b1d, ids_n):
    """Log-probs [B, N, 1] of N one-token continuations: the state's next-token distribution."""
    logits = nnx.merge(graphdef, state).project(last_hidden_b1d)[:, 0]
    return (logits[:, ids_n] - jax.nn.logsumexp(logits, axis=-1, keepdims=True))[:, :, None]


def _generate(graphdef, nb: int, blocks: int, live: int, state, cache: KVCache, last_hidden_b1d, next_pos_b, rows_g,
              ids_gt, mask_gt, limit, temperature, rng, eos_ids):
    """Sampled tokens [G, nb] for rows ``rows_g``, after first appending their left-padded [G, T]
    ``ids_gt`` (T may be 0). Runs on a copy of those rows' first ``live`` slots (each decode step
    reads only those, and the session's cache is left as it was)."""
    model = nnx.merge(graphdef, state)
    cache, last_hidden_b1d, next_pos_b = _rows(cache, last_hidden_b1d, next_pos_b, rows_g, live)
    if ids_gt.shape[1]:
        cache, last_hidden_b1d, next_pos_b = _extend(graphdef, live, state, cache, last_hidden_b1d, next_pos_b,
                                                     ids_gt, mask_gt)
    return gen.sample_loop(model, gen.Prefilled(last_hidden_b1d, cache, next_pos_b),
                           limit, temperature, rng, eos_ids, max_new_tokens=nb, weight_blocks=blocks)


def _rewind(cache: KVCache, index) -> KVCache:
    """The cache with every slot from ``index`` on invalid and its write index there."""
    keep = jnp.arange(cache.valid_bs.shape[1], dtype=jnp.int32)[None, :] < index
    return cache._replace(valid_bs=cache.valid_bs & keep, index=jnp.asarray(index, jnp.int32))


class DecodeSession:
    """``rows`` prompts that all start with ``prefix_ids`` (a system prompt) and grow by appends.

    ``pm``: a ``PretrainedModel`` without a mesh (the session holds its own cache on one device).
    Host-side it keeps each row's tokens after the prefix, so ``extend_to`` can take full states.
    """

    def __init__(self, pm: Any, prefix_ids: Sequence[int], rows: int):
        if pm.mesh is not None:
            raise ValueError("DecodeSession runs on an unsharded model (mesh=None)")
        if not prefix_ids or rows < 1:
            raise ValueError("DecodeSession needs a non-empty prefix and at least one row")
        self.pm = pm
        self.prefix = [int(t) for t in prefix_ids]
        self.rows = rows
        self.rows_b = bucket(rows, minimum=1)
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.index = len(self.prefix)  # host copy of the cache's write index
        self.slots = 0
        self._cache = self._last = self._pos = None
        self._trees: dict[tuple, dict[str, np.ndarray]] = {}  # continuations -> tree_block layout

    # ---- compiled pieces, one per shape bucket ------------------------------------------

    def _fn(self, name: str, key: tuple, fn, donate: tuple[int, ...] = ()):
        return self.pm._jit(("session_" + name,) + key, fn, None, None, donate_argnums=donate)

    def _live(self, extra: int) -> int:
        """Slots a pass of ``extra`` new tokens from the write index reads (a ``LIVE_STEP`` multiple)."""
        return min(self.slots, -(-(self.index + extra) // LIVE_STEP) * LIVE_STEP)

    def _ensure(self, extra: int) -> None:
        need = self.index + extra
        if need <= self.slots:
            return
        slots = -(-need // SLOT_STEP) * SLOT_STEP
        if self._cache is None:
            prefix = self.pm._prefix_cache(self.prefix)
            init = self._fn("init", (len(self.prefix), self.rows_b, slots),
                            functools.partial(_init, self.pm.graphdef, rows=self.rows_b, slots=slots))
            self._cache, self._last, self._pos = init(self.pm.state, prefix)
        else:
            grow = self._fn("grow", (self.rows_b, self.slots, slots), functools.partial(_grow, slots=slots))
            self._cache = grow(self._cache)
        self.slots = slots

    # ---- the three operations -----------------------------------------------------------

    def extend_to(self, states: Sequence[Sequence[int] | None]) -> bool:
        """Appends what each row's full state (prefix included; None: unchanged) adds to its tokens.

        False, appending nothing, when some state does not start with that row's tokens so far
        (the caller then starts a new session)."""
        if len(states) != self.rows:
            raise ValueError(f"extend_to got {len(states)} states for {self.rows} rows")
        new: list[list[int]] = []
        c = len(self.prefix)
        for row, s in zip(self.tokens, states):
            if s is None:
                new.append([])
                continue
            s = list(s)
            if s[:c] != self.prefix or s[c:c + len(row)] != row:
                return False
            new.append(s[c + len(row):])
        self.extend(new)
        return True

    def extend(self, new_tokens: Sequence[Sequence[int]]) -> None:
        """Appends ``new_tokens[i]`` (possibly empty) to row i, all rows in one block of T slots
        (T the longest, bucketed): one [B, T] pass, or, for more than ``GROUP_ROWS`` rows and
        T > ``SHORT_BLOCK``, one [G, T_g] pass per group of rows sorted by length, each from the
        block's first slot."""
        if len(new_tokens) != self.rows:
            raise ValueError(f"extend got {len(new_tokens)} rows of tokens for {self.rows} rows")
        todo = sorted((i for i, t in enumerate(new_tokens) if t), key=lambda i: len(new_tokens[i]))
        if not todo:
            return
        longest = len(new_tokens[todo[-1]])
        t = length_bucket(longest, minimum=8) if longest <= SHORT_BLOCK else length_bucket(longest, steps=LONG_STEPS)
        self._ensure(t)
        if self.rows_b <= GROUP_ROWS or t <= SHORT_BLOCK:
            ids, mask = self._block([list(x) for x in new_tokens] + [[]] * (self.rows_b - self.rows), t, left=True)
            live = self._live(t)
            fn = self._fn("extend", (self.rows_b, self.slots, t, live),
                          functools.partial(_extend, self.pm.graphdef, live), (1,))
            self._cache, self._last, self._pos = fn(self.pm.state, self._cache, self._last, self._pos,
                                                    jnp.asarray(ids), jnp.asarray(mask))
        else:
            done = set(todo)
            for start in range(0, len(todo), GROUP_ROWS):
                group = todo[start:start + GROUP_ROWS]
                toks = [list(new_tokens[i]) for i in group]
                # A short last group is filled with rows that get no tokens in this block: their
                # slots of the block are written invalid. (A row of an earlier group would lose
                # its new tokens; rows_b is a multiple of GROUP_ROWS, so there are enough.)
                fill = [i for i in range(self.rows_b) if i not in done][:GROUP_ROWS - len(group)]
                tg = length_bucket(max(map(len, toks)), steps=LONG_STEPS)
                ids, mask = self._block(toks + [[]] * len(fill), tg, left=False)
                live = self._live(tg)
                fn = self._fn("extend", (self.rows_b, self.slots, GROUP_ROWS, tg, live),
                              functools.partial(_extend_rows, self.pm.graphdef, live), (1,))
                self._cache, self._last, self._pos = fn(
                    self.pm.state, self._cache, self._last, self._pos, jnp.asarray(np.asarray(group + fill, np.int32)),
                    jnp.asarray(ids), jnp.asarray(mask),
                    jnp.asarray(self.index + (t if start + GROUP_ROWS >= len(todo) else 0), jnp.int32))
        self.index += t
        for row, toks in zip(self.tokens, new_tokens):
            row.extend(int(x) for x in toks)

    def _block(self, rows: Sequence[Sequence[int]], t: int, *, left: bool) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask [len(rows), t], each row padded on the left (or the right)."""
        ids = np.zeros((len(rows), t), np.int32)
        mask = np.zeros((len(rows), t), np.int32)
        for i, toks in enumerate(rows):
            if toks:
                sl = slice(t - len(toks), t) if left else slice(0, len(toks))
                ids[i, sl] = toks
                mask[i, sl] = 1
        self.pm._check_ids(ids)
        return ids, mask

    def wait(self) -> None:
        """Blocks until the appends so far are computed (JAX runs them asynchronously; for timing)."""
        if self._cache is not None:
            jax.block_until_ready(self._cache)

    def mark(self) -> tuple:
        """The session's state now, for :meth:`rewind` (e.g. before appending a scratch header)."""
        return self.index, [len(t) for t in self.tokens], self._last, self._pos

    def rewind(self, mark: tuple) -> None:
        """Drops everything appended since ``mark`` was taken."""
        index, lengths, last, pos = mark
        fn = self._fn("rewind", (self.rows_b, self.slots), _rewind, (0,))
        self._cache = fn(self._cache, jnp.asarray(index, jnp.int32))
        self.index, self._last, self._pos = index, last, pos
        for row, n in zip(self.tokens, lengths):
            del row[n:]

    def _row_bucket(self, rows: Sequence[int] | None) -> tuple[list[int], np.ndarray]:
        """The rows a pass runs (all when None) and their index array, padded to a bucket by
        repeating the first (a few row counts per session: one compiled shape each)."""
        rows = list(range(self.rows)) if rows is None else [int(r) for r in rows]
        if not rows or any(not 0 <= r < self.rows for r in rows):
            raise ValueError(f"rows must be a non-empty subset of 0..{self.rows - 1}, got {rows}")
        g = min(self.rows_b, bucket(len(rows), minimum=max(1, self.rows_b // 4)))
        return rows, np.asarray(rows + [rows[0]] * (g - len(rows)), np.int32)

    def score(self, continuations: Sequence[Sequence[int]], rows: Sequence[int] | None = None) -> np.ndarray:
        """Per-token log-probs [R, N, H] (0 on padding) of each continuation after the state of
        each of ``rows`` (default: every row), in that order."""
        if not continuations or not all(continuations):
            raise ValueError("score needs non-empty continuations")
        rows, rows_g = self._row_bucket(rows)
        if max(map(len, continuations)) == 1:  # e.g. option letters: no pass over the cache at all
            ids = np.asarray([c[0] for c in continuations], np.int32)
            self.pm._check_ids(ids)
            fn = self._fn("next_token", (self.rows_b, len(ids)), functools.partial(_next_token, self.pm.graphdef))
            return np.asarray(jax.device_get(fn(self.pm.state, self._last, jnp.asarray(ids))))[rows]
        key = tuple(tuple(map(int, c)) for c in continuations)
        if key not in self._trees:  # the same headers every step: laid out and checked once
            self._trees[key] = tree_block(continuations)
            self.pm._check_ids(self._trees[key]["ids"])
        tree = self._trees[key]
        m = tree["ids"].shape[0]
        self._ensure(m)
        live = self._live(m)
        fn = self._fn("score", (self.rows_b, self.slots, len(rows_g), m) + tree["take"].shape + (live,),
                      functools.partial(_score, self.pm.graphdef, live))
        lp = fn(self.pm.state, self._cache, self._last, self._pos, jnp.asarray(rows_g),
                *(jnp.asarray(tree[k]) for k in ("ids", "offset", "allowed", "source", "take", "cmask")))
        return np.asarray(jax.device_get(lp))[:len(rows)]

    def generate(self, max_new_tokens: int, *, rows: Sequence[int] | None = None,
                 prompts: Sequence[Sequence[int]] | None = None, temperature: float = 0.0, seed: int = 0,
                 eos_token_ids: Sequence[int] = ()) -> list[list[int]]:
        """New token ids for each of ``rows`` (default: every row), in that order, up to and
        including EOS, each sampled after its state and then ``prompts[i]`` (e.g. an action
        header; default none). The cache is left as before."""
        rows, rows_g = self._row_bucket(rows)
        prompts = [[]] * len(rows) if prompts is None else [list(p) for p in prompts]
        if len(prompts) != len(rows):
            raise ValueError(f"generate got {len(prompts)} prompts for {len(rows)} rows")
        longest = max(map(len, prompts))
        t = length_bucket(longest, minimum=8) if longest else 0
        ids, mask = self._block(prompts + [prompts[0]] * (len(rows_g) - len(rows)), t, left=True)
        nb = bucket(max_new_tokens, minimum=16)
        eos = tuple(eos_token_ids) or (-2,)
        self._ensure(t + nb)
        blocks = self.pm.decode_weight_blocks
        live = self._live(t + nb)
        fn = self._fn("generate", (self.rows_b, self.slots, len(rows_g), t, nb, len(eos), blocks, live),
                      functools.partial(_generate, self.pm.graphdef, nb, blocks, live))
        out = fn(self.pm.state, self._cache, self._last, self._pos, jnp.asarray(rows_g), jnp.asarray(ids),
                 jnp.asarray(mask), jnp.asarray(max_new_tokens, jnp.int32), jnp.asarray(temperature, jnp.float32),
                 jax.random.PRNGKey(seed), jnp.asarray(eos, jnp.int32))
        return gen.trim_outputs(np.asarray(jax.device_get(out))[:len(rows)], eos, max_new_tokens)
