"""PyTorch reference of the PPO and SFT formulas (written independently of spark_jax.rl).

Spans are handled with explicit loops over rows and spans, loss weights from their definition:
"tokens" = 1 / (action tokens of the batch), "records" = 1 / (tokens of the span x spans of the batch).
"""

from __future__ import annotations

import torch


def token_logprobs(logits, targets):
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None].long())[..., 0]


def entropy(logits):
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


def weights(mask, span, span_mask, normalization):
    if normalization == "tokens":
        return mask / mask.sum().clamp(min=1.0)
    w = torch.zeros_like(mask)
    n_spans = span_mask.sum().clamp(min=1.0)
    for b in range(mask.shape[0]):
        for s in range(span_mask.shape[1]):
            sel = (span[b] == s) & (mask[b] > 0)
            if sel.any():
                w[b, sel] = 1.0 / sel.sum() / n_spans
    return w


def ppo_loss(logits, targets, old, ref_logprobs, adv, weight, span, num_spans, *, clip_eps, kl_coef,
             kl_estimator, entropy_coef, ratio_level):
    """``ref_logprobs``: [B, A, V] reference log-softmax; ``adv`` [B, A]; ``weight`` [B, A]."""
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, targets[..., None].long())[..., 0]
    live = weight > 0
    if ratio_level == "token":
        ratio = torch.exp(logp - old)
    else:
        ratio = torch.ones_like(logp)
        for b in range(logp.shape[0]):
            for s in range(num_spans):
                sel = (span[b] == s) & live[b]
                if sel.any():
                    ratio[b, sel] = torch.exp((logp[b, sel] - old[b, sel]).mean())
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_eps, 1 + clip_eps))
    ref_logp = ref_logprobs.gather(-1, targets[..., None].long())[..., 0]
    if kl_estimator == "full":
        kl_t = (logp_all.exp() * (logp_all - ref_logprobs)).sum(-1)
    else:
        kl_t = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
    return (weight * pg).sum() + kl_coef * (weight * kl_t).sum() - entropy_coef * (weight * entropy(logits)).sum()


def sft_loss(logits, targets, weight):
    return -(weight * token_logprobs(logits, targets)).sum()
