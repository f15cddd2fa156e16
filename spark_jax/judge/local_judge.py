"""The local judge: the in-process JAX model scores each candidate by its expected answer.

For every candidate the model is asked, in its chat template, for one integer 0-10 (see
:func:`~spark_jax.judge.prompts.single_action_messages`), and its reply is primed with
"Score: " (:data:`ANSWER_FORMS`). The score is the expectation
``sum_k k * p(k)`` of the next-token distribution restricted to the answers "0".."10" and
renormalised over them. All candidates of a step go through ONE jitted call (shapes padded
to buckets): the token prefix the nine prompts share (instructions, question, trajectory,
candidate list) runs once into a KV cache, which is broadcast to the nine rows whose short
candidate-specific suffixes then run against it; only the few log-probabilities needed
leave the device. (Nine full rows cost ~5x more: the shared prefix is ~90% of each prompt.)

"10" as one or two tokens: tokenizers that split digits (SmolLM2, ChatML BPE) write "10" as
"1" then "0". Each prompt is extended by the token "1", and the same forward pass reads
q = p("0" | prompt + "1") at the next position. The answer "1" gets p("1")*(1-q) and the
answer "10" gets p("1")*q; any other continuation of "1" ("11", "1.") counts as "1", and
all 11 masses are then renormalised. With a single "10" token (Llama 3) p("10") is read directly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spark_jax.backends.accounting import BackendStats
from spark_jax.backends.model_thread import run_on_model_thread
from spark_jax.core.shapes import bucket, length_bucket
from spark_jax.judge import prompts
from spark_jax.model.llama import KVCache, positions_from_mask
from spark_jax.model.sharding import batch_sharding
from spark_jax.protocol.chat import encode_chat
from spark_jax.protocol.interfaces import JudgeRequest, JudgeResult

log = logging.getLogger(__name__)

# Nine candidates per step is the normal case: keep it an exact bucket instead of padding to 16.
BATCH_BUCKETS = (1, 2, 4, 8, 9, 16, 18, 32, 64, 128, 256)


class PromptTooLong(ValueError):
    """A judge prompt longer than the model's context: the step fails, the run goes on."""


# The assistant's reply is primed with this text so that the next token is the score itself:
# unprimed, SmolLM2-135M-Instruct puts only ~14% of its next-token mass on digits (it starts
# with "The", "C", "You"); after "Score: " nearly all of it. Tokenizers that glue the space to
# the number use the second form, with the space inside the answer token.
ANSWER_FORMS = (("Score: ", "{k}"), ("Score:", " {k}"))  # (prefix, answer)


@dataclasses.dataclass(frozen=True)
class ScoreTokens:
    """Token ids of the primed answer: ``prefix`` then "k" = ``digits[k]`` (k in 0..9). ``ten``
    is the id of "10" when it is a single token; otherwise "10" is ``digits[1]`` followed by
    ``zero_after_one``."""

    prefix: tuple[int, ...]
    digits: tuple[int, ...]
    ten: int | None
    zero_after_one: int | None

    @property
    def first_ids(self) -> tuple[int, ...]:
        """The ids read at the answer's first position: "0".."9" (+ "10" when single)."""
        return self.digits + ((self.ten,) if self.ten is not None else ())


def _answer_tokens(tokenizer: Any, prefix: str, answer: str) -> ScoreTokens | None:
    base = list(tokenizer.encode(prefix, add_special_tokens=False))
    tails = []
    for k in range(11):
        full = list(tokenizer.encode(prefix + answer.format(k=k), add_special_tokens=False))
        if full[:len(base)] != base:
            return None
        tails.append(full[len(base):])
    if any(len(t) != 1 for t in tails[:10]) or len({t[0] for t in tails[:10]}) != 10:
        return None
    digits = tuple(int(t[0]) for t in tails[:10])
    ten = tails[10]
    if len(ten) == 1:
        return ScoreTokens(tuple(base), digits, int(ten[0]), None)
    if len(ten) == 2 and ten[0] == digits[1]:
        return ScoreTokens(tuple(base), digits, None, int(ten[1]))
    return None


def score_tokens(tokenizer: Any) -> ScoreTokens:
    """The answer prefix and the ids of "0".."10" after it; raises if no form works."""
    for prefix, answer in ANSWER_FORMS:
        found = _answer_tokens(tokenizer, prefix, answer)
        if found is not None:
            return found
    raise ValueError(
        f"the tokenizer does not write the scores 0..10 in any of the forms {ANSWER_FORMS} as one token per digit "
        "(with '10' as one token or '1' + '0'); the local judge cannot read its answer distribution"
    )


def answer_log_masses(first_logp: np.ndarray, zero_after_one_logp: np.ndarray | None) -> np.ndarray:
    """Unnormalised log-probabilities [..., 11] of the answers 0..10.

    ``first_logp`` [..., 11] holds log p("0".."9", "10") when "10" is one token; [..., 10]
    (digits only) when it is two tokens, and then ``zero_after_one_logp`` [...] is
    log p("0" | "1") and splits the mass of "1" between the answers 1 and 10.
    """
    first_logp = np.asarray(first_logp, np.float64)
    if zero_after_one_logp is None:
        if first_logp.shape[-1] != 11:
            raise ValueError(f"expected 11 answer log-probs, got shape {first_logp.shape}")
        return first_logp
    if first_logp.shape[-1] != 10:
        raise ValueError(f"expected 10 digit log-probs with a two-token '10', got shape {first_logp.shape}")
    q = np.asarray(zero_after_one_logp, np.float64)
    # log(1 - exp(q)) computed stably; q <= 0 is a log-probability.
    log_not_zero = np.where(q > -0.693, np.log(-np.expm1(q)), np.log1p(-np.exp(q)))
    masses = first_logp.copy()
    masses[..., 1] = first_logp[..., 1] + log_not_zero
    ten = first_logp[..., 1] + q
    return np.concatenate([masses, ten[..., None]], axis=-1)


def answer_distribution(log_masses: np.ndarray) -> np.ndarray:
    """Probabilities [..., 11] of the answers 0..10, renormalised over those answers only."""
    m = np.asarray(log_masses, np.float64)
    m = m - m.max(axis=-1, keepdims=True)
    p = np.exp(m)
    return p / p.sum(axis=-1, keepdims=True)


def expected_score(probs: np.ndarray) -> np.ndarray:
    """sum_k k * p(k) over the answers k = 0..10; ``probs`` [..., 11] sums to 1."""
    probs = np.asarray(probs, np.float64)
    if probs.shape[-1] != 11:
        raise ValueError(f"expected probabilities over 11 answers, got shape {probs.shape}")
    return probs @ np.arange(11, dtype=np.float64)


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to all rows."""
    first, n = rows[0], min(len(r) for r in rows)
    for j in range(n):
        if any(r[j] != first[j] for r in rows[1:]):
            return j
    return n


@dataclasses.dataclass(frozen=True)
class ScoreDetails:
    scores: dict[str, float]
    probs: np.ndarray  # [n_actions, 11] answer distribution per candidate
    digit_mass: np.ndarray  # [n_actions] total next-token probability on the answers (before renormalising)


class LocalJudge:
    """``await judge.score(request)`` on a :class:`~spark_jax.model.pretrained.PretrainedModel`."""

    def __init__(self, model: Any, *, name: str | None = None):
        if model.tokenizer is None:
            raise ValueError("the local judge needs a model with a tokenizer (a directory with tokenizer files)")
        self.model = model
        self.name = f"local:{name or 'model'}"
        self.tokens = score_tokens(model.tokenizer)
        self.stats = BackendStats()
        self.compiled_buckets: set[tuple[int, int, int]] = set()
        graphdef, cfg = model.graphdef, model.config

        def answer_logps(state, prefix_ids_1p, prefix_mask_1p, suffix_ids_bs, suffix_mask_bs, last_b,
                         first_ids_k, zero_id):
            """log p(first answer token) [B, K] and log p("0" | "1") [B] in one pass.

            The prefix shared by all candidates fills a KV cache once; the cache is broadcast
            to the B candidate rows, whose suffixes then run against it.
            """
            m = nnx.merge(graphdef, state)
            p, (b, s) = prefix_ids_1p.shape[1], suffix_ids_bs.shape
            cache = KVCache.empty(cfg, 1, p + s)
            _, cache = m.hidden_states(prefix_ids_1p, positions_from_mask(prefix_mask_1p, prefix_ids_1p.shape),
                                       prefix_mask_1p, cache, live_slots=p)
            cache = cache.broadcast(b)
            n_prefix = jnp.sum(prefix_mask_1p).astype(jnp.int32)
            positions_bs = n_prefix + jnp.maximum(jnp.cumsum(suffix_mask_bs, axis=-1) - 1, 0).astype(jnp.int32)
            hidden_bsd, _ = m.hidden_states(suffix_ids_bs, positions_bs, suffix_mask_bs, cache)
            at_b2 = jnp.stack([last_b, last_b + 1], axis=1)  # the answer slot and the slot after "1"
            h_b2d = jnp.take_along_axis(hidden_bsd, at_b2[:, :, None], axis=1)
            logp_b2v = jax.nn.log_softmax(m.project(h_b2d), axis=-1)
            return logp_b2v[:, 0][:, first_ids_k], logp_b2v[:, 1, zero_id]

        self._answer_logps = jax.jit(answer_logps)

    # ---- the batched forward pass ---------------------------------------------------------

    def prompt_ids(self, request: JudgeRequest) -> list[list[int]]:
        """Token ids per candidate: chat template + answer prefix (the answer slot) + "1"."""
        tok = self.model.tokenizer
        tail = list(self.tokens.prefix) + [self.tokens.digits[1]]
        return [encode_chat(tok, prompts.single_action_messages(request, a)) + tail for a in request.actions]

    def score_sync(self, request: JudgeRequest) -> ScoreDetails:
        """Scores all candidates with one jitted call (runs on the caller's thread)."""
        rows = self.prompt_ids(request)
        n = len(rows)
        longest = max(len(r) for r in rows)
        limit = self.model.config.max_position_embeddings
        if longest > limit:
            raise PromptTooLong(f"judge prompt of {longest} tokens exceeds the model's {limit} positions")
        shared = shared_prefix_length(rows)
        if shared == 0:
            raise ValueError("the candidate prompts share no first token; the chat template is unusual")
        shared = min(shared, min(len(r) for r in rows) - 2)  # every suffix holds its answer slot and "1"
        suffixes = [r[shared:] for r in rows]
        pb = length_bucket(shared, minimum=64)
        bb = bucket(n, buckets=BATCH_BUCKETS) if n <= BATCH_BUCKETS[-1] else bucket(n)
        sb = length_bucket(max(len(x) for x in suffixes))
        if (pb, bb, sb) not in self.compiled_buckets:
            log.info("local judge: compiling for prefix=%d batch=%d suffix=%d", pb, bb, sb)
            self.compiled_buckets.add((pb, bb, sb))
        prefix_ids = np.zeros((1, pb), np.int32)
        prefix_mask = np.zeros((1, pb), np.int32)
        prefix_ids[0, :shared] = rows[0][:shared]
        prefix_mask[0, :shared] = 1
        ids = np.zeros((bb, sb), np.int32)
        mask = np.zeros((bb, sb), np.int32)
        last = np.zeros((bb,), np.int32)
        for i, x in enumerate(suffixes):  # right padding: a row's answer slot sits just before its "1"
            ids[i, :len(x)] = x
            mask[i, :len(x)] = 1
            last[i] = len(x) - 2
        first_logp, zero_logp = self._answer_logps(
            self.model.state, self._put(prefix_ids), self._put(prefix_mask), self._put(ids), self._put(mask),
            self._put(last), jnp.asarray(self.tokens.first_ids, jnp.int32),
            jnp.asarray(self.tokens.zero_after_one if self.tokens.ten is None else 0, jnp.int32),
        )
        first_logp = np.asarray(jax.device_get(first_logp))[:n]
        zero_logp = np.asarray(jax.device_get(zero_logp))[:n]
        log_masses = answer_log_masses(first_logp, None if self.tokens.ten is not None else zero_logp)
        probs = answer_distribution(log_masses)
        scores = expected_score(probs)
        mass = np.exp(log_masses).sum(axis=-1)
        return ScoreDetails({a: float(s) for a, s in zip(request.actions, scores)}, probs, mass)

    def _put(self, arr: np.ndarray):
        mesh = getattr(self.model, "mesh", None)
        if mesh is None:
            return jnp.asarray(arr)
        return jax.device_put(arr, batch_sharding(mesh, arr.shape))

    # ---- the Judge protocol ---------------------------------------------------------------

    async def score(self, request: JudgeRequest) -> JudgeResult:
        self.stats.calls += 1
        try:
            details = await run_on_model_thread(self.model, self.score_sync, request)
        except PromptTooLong as e:
            self.stats.failures += 1
            return JudgeResult(ok=False, error=f"local judge: {e}", attempts=1)
        bad = {a: s for a, s in details.scores.items() if not (math.isfinite(s) and 0.0 <= s <= 10.0)}
        if bad:
            self.stats.failures += 1
            return JudgeResult(ok=False, error=f"local judge produced invalid scores {bad}", attempts=1)
        return JudgeResult(ok=True, scores=details.scores, attempts=1)


__all__: Sequence[str] = ["LocalJudge", "score_tokens", "answer_log_masses", "answer_distribution",
                          "expected_score", "ScoreDetails", "PromptTooLong"]
