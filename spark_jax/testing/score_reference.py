"""The full-sequence way to score action headers (the score mode before the cached one): one
row per header holding the whole prompt, all logits copied back. Kept as the reference that the
cached ``PretrainedModel.score_continuations`` is tested and benchmarked against."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def full_sequence_logprobs(model: Any, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]]
                           ) -> list[list[float]]:
    """Per-token log-probs of each continuation after ``prompt_ids`` from ``model.logits``."""
    seqs = [list(prompt_ids) + list(c) for c in continuations]
    width = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), width), np.int32)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    p = len(prompt_ids)
    span = model.logits(ids, mask)[:, p - 1:p - 1 + max(len(c) for c in continuations)].astype(np.float64)
    logp = span - np.logaddexp.reduce(span, axis=-1, keepdims=True)
    return [[float(logp[i, j, t]) for j, t in enumerate(c)] for i, c in enumerate(continuations)]
