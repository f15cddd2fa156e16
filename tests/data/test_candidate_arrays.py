"""What the candidate objective and the diagnostics read from a batch: token roles, the judge's
scores of every candidate, the run's rarity and the ten headers."""

import math

import numpy as np
import pytest

from spark_jax.data import packing as pk
from spark_jax.data import pipeline as pl
from tests.conftest import synthetic_records

EOT = "<|im_end|>"


def _judged(n=6):
    recs = synthetic_records(n)
    for i, rec in enumerate(recs):
        if rec["selected"] != "answer":
            rec["candidates"] = [{"action": a, "score": float((i + j) % 11)} for j, a in enumerate(pk.ACTIONS[:9])]
    return recs


def test_roles_mark_header_shared_format_and_end_of_turn(chat_tokenizer):
    tok = chat_tokenizer
    heads = pk.HeaderTokens.of(tok, EOT)
    assert len(heads.ids) == 10 and heads.shared_prefix >= 1 and heads.eot_len == 1
    for h in heads.ids:  # the shared prefix and suffix are the same tokens in every header
        assert h[:heads.shared_prefix] == heads.ids[0][:heads.shared_prefix]
        assert h[len(h) - heads.shared_suffix:] == heads.ids[0][len(heads.ids[0]) - heads.shared_suffix:]
    target = tok("Action: python\nInput: print(2 ** 10)" + EOT, add_special_tokens=False)["input_ids"]
    roles = heads.roles("python", target)
    head = heads.ids[pk.ACTIONS.index("python")]
    assert list(target[:len(head)]) == list(head)
    assert roles[-1] == pk.ROLE_EOT
    assert all(r in (pk.ROLE_HEADER, pk.ROLE_FORMAT) for r in roles[:len(head)])
    assert pk.ROLE_HEADER in roles[:len(head)]  # the action's own name
    assert all(r == pk.ROLE_INPUT for r in roles[len(head):-1])
    assert roles[:heads.shared_prefix] == (pk.ROLE_FORMAT,) * heads.shared_prefix


def test_candidate_scores_and_run_rarity():
    recs = _judged(6)
    s = pk.candidate_scores(recs[0])
    assert len(s) == 10 and s[0] == 0.0 and s[8] == 8.0 and math.isnan(s[9])  # answer is never judged
    assert all(math.isnan(x) for x in pk.candidate_scores({"candidates": []}))
    rarity = pk.run_rarity(recs)
    judged = [r["selected"] for r in recs if r["candidates"]]
    for a, r in zip(pk.ACTIONS, rarity):
        assert r == pytest.approx(1 - judged.count(a) / len(judged))


@pytest.mark.parametrize("packing", [True, False])
def test_collate_carries_roles_scores_and_headers(chat_tokenizer, packing):
    tok = chat_tokenizer
    recs = _judged(6)
    heads = pk.HeaderTokens.of(tok, EOT)
    rows, _ = pk.build_rows(tok, recs, EOT, 10_000, packing=packing, gamma=1.0)
    rarity = pk.run_rarity(recs)
    batch = pl.collate(rows, (256, 512), tok.pad_token_id, headers=heads, rarity=rarity)
    n = len(pk.ACTIONS)
    b, s = batch["span_mask"].shape
    assert batch["span_cand_score"].shape == (b, s, n) and batch["cand_rarity"].shape == (b, n)
    np.testing.assert_allclose(batch["cand_rarity"][0], rarity)
    flat = [t for h in heads.ids for t in h]
    assert batch["header_ids"][0].tolist() == flat
    assert batch["header_action"][0].tolist() == [a for a, h in enumerate(heads.ids) for _ in h]
    assert batch["header_offset"][0].tolist() == [i for h in heads.ids for i in range(len(h))]
    i = 0
    for r, row in enumerate(rows):
        for j in range(len(row.spans)):
            rec = recs[i]
            i += 1
            sel = batch["span_selected"][r, j]
            assert pk.ACTIONS[sel] == rec["selected"]
            judged = batch["span_cand_mask"][r, j]
            assert judged.sum() == (9 if rec["candidates"] else 0)
            if rec["candidates"]:
                assert batch["span_cand_score"][r, j, :9].tolist() == [c["score"] for c in rec["candidates"]]
            live = (batch["action_mask"][r] > 0) & (batch["action_span"][r] == j)
            roles = batch["action_role"][r][live]
            assert roles.tolist() == list(row.roles[j])
    # without headers the arrays keep their shapes, fully masked
    plain = pl.collate(rows, (256, 512), tok.pad_token_id)
    assert plain["header_mask"].sum() == 0 and set(plain) == set(batch)
    shapes = pl.batch_shapes(b, 256, 64, s, header_len=len(flat))
    assert set(shapes) == set(batch) - {"loss_mask"}
    for k, (shape, dtype) in shapes.items():
        assert shape[0] == b and batch[k].dtype == dtype and batch[k].ndim == len(shape), k
