"""The local judge: the in-process JAX model scores each candidate by its expected answer.

For every candidate the model is asked, in its chat template, for one integer 0-10 (see
:func:`~spark_jax.judge.prompts.single_action_messages`). The score is the expectation
``sum_k k * p(k)`` of the next-token distribution restricted to the answers "0".."10" and
renormalised over them. All candidates of a step go through ONE jitted forward pass (batch
and length padded to shape buckets), which returns only the few log-probabilities needed.

"10" as one or two tokens: tokenizers that split digits (SmolLM2, ChatML BPE) write "10" as
"1" then "0". Each prompt is then extended by the token "1", and the same forward pass reads
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

from spark_jax.data.chat import encode_chat
from spark_jax.judge import prompts
from spark_jax.judge.accounting import BackendStats
from spark_jax.judge.model_thread import run_on_model_thread
from spark_jax.model.llama import positions_from_mask
from spark_jax.rollout.interfaces import JudgeRequest, JudgeResult
from spark_jax.shapes import bucket

log = logging.getLogger(__name__)

# Nine candidates per step is the normal case: keep it an exact bucket instead of padding to 16.
BATCH_BUCKETS = (1, 2, 4, 8, 9, 16, 18, 32, 64, 128, 256)


class PromptTooLong(ValueError):
    """A judge prompt longer than the model's context: the step fails, the run goes on."""


@dataclasses.dataclass(frozen=True)
class ScoreTokens:
    """Token ids of the answers: ``digits[k]`` is "k" for k in 0..9; ``ten`` is "10" if single."""

    digits: tuple[int, ...]
    ten: int | None

    @property
    def first_ids(self) -> tuple[int, ...]:
        """The ids read at the answer's first position: "0".."9" (+ "10" when single)."""
        return self.digits + ((self.ten,) if self.ten is not None else ())


def score_tokens(tokenizer: Any) -> ScoreTokens:
    """Finds the ids of "0".."9" and "10"; raises if a digit is not one token."""
    digits = []
    for k in range(10):
        ids = tokenizer.encode(str(k), add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"the tokenizer writes the digit {k!r} as {len(ids)} tokens {ids}; "
                             "the local judge needs single-token digits")
        digits.append(int(ids[0]))
    ten = tokenizer.encode("10", add_special_tokens=False)
    if len(ten) == 1:
        return ScoreTokens(tuple(digits), int(ten[0]))
    if list(ten) == [digits[1], digits[0]]:
        return ScoreTokens(tuple(digits), None)
    raise ValueError(f"the tokenizer writes '10' as {ten}, neither one token nor '1' + '0'")


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
        self.one_id = self.tokens.digits[1]
        self.stats = BackendStats()
        self.compiled_buckets: set[tuple[int, int]] = set()
        graphdef = model.graphdef

        def answer_logps(state, ids_bt, mask_bt, last_b, first_ids_k, zero_id):
            """log p(first answer token) [B, K] and log p("0" | "1") [B] in one pass."""
            m = nnx.merge(graphdef, state)
            hidden_btd, _ = m.hidden_states(ids_bt, positions_from_mask(mask_bt, ids_bt.shape), mask_bt)
            at_b2 = jnp.stack([last_b, last_b + 1], axis=1)  # the answer slot and the slot after "1"
            h_b2d = jnp.take_along_axis(hidden_btd, at_b2[:, :, None], axis=1)
            logp_b2v = jax.nn.log_softmax(m.project(h_b2d), axis=-1)
            return logp_b2v[:, 0][:, first_ids_k], logp_b2v[:, 1, zero_id]

        self._answer_logps = jax.jit(answer_logps)

    # ---- the batched forward pass ---------------------------------------------------------

    def prompt_ids(self, request: JudgeRequest) -> list[list[int]]:
        """Chat-template token ids per candidate, each ending where the answer starts, plus "1"."""
        tok = self.model.tokenizer
        return [encode_chat(tok, prompts.single_action_messages(request, a)) + [self.one_id]
                for a in request.actions]

    def score_sync(self, request: JudgeRequest) -> ScoreDetails:
        """Scores all candidates with one jitted call (runs on the caller's thread)."""
        rows = self.prompt_ids(request)
        n = len(rows)
        longest = max(len(r) for r in rows)
        limit = self.model.config.max_position_embeddings
        if longest > limit:
            raise PromptTooLong(f"judge prompt of {longest} tokens exceeds the model's {limit} positions")
        bb = bucket(n, buckets=BATCH_BUCKETS) if n <= BATCH_BUCKETS[-1] else bucket(n)
        tb = min(bucket(longest, minimum=64), max(limit, longest))
        if (bb, tb) not in self.compiled_buckets:
            log.info("local judge: compiling for shape bucket batch=%d length=%d", bb, tb)
            self.compiled_buckets.add((bb, tb))
        ids = np.zeros((bb, tb), np.int32)
        mask = np.zeros((bb, tb), np.int32)
        last = np.zeros((bb,), np.int32)
        for i, r in enumerate(rows):  # right padding: a row's answer slot is its "1" minus one
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
            last[i] = len(r) - 2
        mask[n:, 0] = 1  # padding rows get one real token so attention is never empty
        first_logp, zero_logp = self._answer_logps(
            self.model.state, self._put(ids), self._put(mask), self._put(last),
            jnp.asarray(self.tokens.first_ids, jnp.int32), jnp.asarray(self.tokens.digits[0], jnp.int32),
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
        from spark_jax.model.sharding import batch_sharding

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
