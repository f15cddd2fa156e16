"""PyTorch reference of the PPO and SFT formulas (written independently of spark_jax.rl)."""

from __future__ import annotations

import torch


def token_logprobs(logits, targets):
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None].long())[..., 0]


def entropy(logits):
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)


def mmean(x, m):
    return (x * m).sum() / m.sum().clamp(min=1.0)


def ppo_loss(logits, targets, old, ref, adv, mask, *, clip_eps, kl_coef, kl_estimator, entropy_coef, ratio_level):
    logp = token_logprobs(logits, targets)
    if ratio_level == "token":
        ratio = torch.exp(logp - old)
        a = adv[:, None]
        pg = torch.max(-a * ratio, -a * ratio.clamp(1 - clip_eps, 1 + clip_eps))
        pg_loss = mmean(pg, mask)
    else:
        per_seq = ((logp - old) * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        ratio = torch.exp(per_seq)
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_eps, 1 + clip_eps))
        has = (mask.sum(-1) > 0).float()
        pg_loss = mmean(pg, has)
    if kl_estimator == "k1":
        kl_t = logp - ref
    else:
        kl_t = torch.exp(ref - logp) - (ref - logp) - 1
    kl = mmean(kl_t, mask)
    ent = mmean(entropy(logits), mask)
    return pg_loss + kl_coef * kl - entropy_coef * ent


def sft_loss(logits, targets, mask):
    return -mmean(token_logprobs(logits, targets), mask)
