"""The batched score mode (one DecodeSession per chunk) against the per-question path, and the
always-read answer, on the tiny random model with its chat tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

import spark_jax
from spark_jax.eval.agent import AgentConfig, PolicyAgent, action_names
from spark_jax.protocol.chat import encode_chat
from spark_jax.tools import ToolResult

QUESTIONS = [
    {"question_id": i, "category": "math", "question": q, "options": opts, "answer": ans, "answer_index": 0}
    for i, (q, opts, ans) in enumerate([
        ("What is 17 times 23?", ["381", "391", "401", "371"], "B"),
        ("Which gas do plants take in?", ["oxygen", "carbon dioxide", "argon"], "B"),
        ("What is 2 + 2 in a much longer question text that pads the state a little more?",
         [str(k) for k in range(10)], "E"),
    ])
]


def _runner(name, arg, timeout_s=None):
    return ToolResult(ok=True, output=f"{name} says {arg[:20]}", error=None, elapsed_s=0.0)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return spark_jax.load_pretrained(str(tiny_model_dir))


def _states(row):
    """The state before each policy message of a transcript (forced answers excluded)."""
    t = row["transcript"]
    return [t[:i] for i, m in enumerate(t) if m["role"] == "assistant"][:len(row["header_logprobs"])]


def test_batched_header_scores_equal_the_per_question_path(tiny):
    agent = PolicyAgent(tiny, AgentConfig(mode="score", max_steps=3, max_action_tokens=8, batch_size=2),
                        tool_runner=_runner)
    rows = agent.run(QUESTIONS)  # two chunks: 2 questions, then 1
    assert agent.phase_seconds["header scoring"] > 0
    assert agent.session_restarts == 0  # ChatML states only grow: each step appends to the cache
    checked = 0
    for row in rows:
        assert row["header_logprobs"], "score mode records the ten header log-probs per step"
        for state, got in zip(_states(row), row["header_logprobs"]):
            ids = encode_chat(tiny.tokenizer, state)
            want = agent.score_actions(ids, agent._system_prefix_len(state, ids))
            assert list(got) == list(action_names())
            np.testing.assert_allclose([got[n] for n in want], list(want.values()), atol=1e-4, rtol=0)
            checked += 1
    assert checked >= len(QUESTIONS)


def test_every_answer_is_read_in_letter_mode(tiny):
    for mode in ("score", "generate"):
        agent = PolicyAgent(tiny, AgentConfig(mode=mode, max_steps=1, max_action_tokens=6, batch_size=4),
                            tool_runner=_runner)
        rows = agent.run(QUESTIONS)
        for q, row in zip(QUESTIONS, rows):
            assert row["pred"] is not None and row["pred"] in "ABCDEFGHIJ"[:len(q["options"])]
            assert row["answer_mode"] == "letter" and row["transcript"][-1]["role"] == "assistant"
            assert row["transcript"][-1]["content"].startswith("Action: answer\nInput: The answer is (")


def test_letter_read_is_the_best_scored_option(tiny):
    agent = PolicyAgent(tiny, AgentConfig(mode="score", max_steps=1, max_action_tokens=6), tool_runner=_runner)
    (row,) = agent.run(QUESTIONS[1:2])
    state = row["transcript"][:-1]  # before the answer message
    ids = encode_chat(tiny.tokenizer, state) + agent._answer_head_ids()
    scores = [sum(s) for s in tiny.score_continuations(ids, agent._letter_ids())][:3]
    assert row["pred"] == "ABC"[int(np.argmax(scores))]


def test_text_mode_keeps_the_free_answer(tiny):
    agent = PolicyAgent(tiny, AgentConfig(mode="score", max_steps=1, max_action_tokens=6, max_answer_tokens=6,
                                          answer_mode="text"), tool_runner=_runner)
    rows = agent.run(QUESTIONS)
    assert all(r["answer_mode"] == "text" and not r["answer_scored"] for r in rows)


def test_generate_mode_on_the_session_equals_one_generate_per_step(tiny, monkeypatch):
    # The session path (each step appends only what is new, decodes the active rows) writes the
    # same greedy actions as one full-prompt generate per step, the path a model on a mesh takes.
    cfg = AgentConfig(mode="generate", max_steps=2, max_action_tokens=8, batch_size=2)
    got = PolicyAgent(tiny, cfg, tool_runner=_runner).run(QUESTIONS)
    reference = PolicyAgent(tiny, cfg, tool_runner=_runner)
    reference_decodes = []
    original = reference._decode

    def counted(prompt_ids, max_new):
        reference_decodes.append(len(prompt_ids))
        return original(prompt_ids, max_new)

    monkeypatch.setattr(reference, "_decode", counted)
    # the one-question-at-a-time reference: no session for the actions (letters still read alike)
    monkeypatch.setattr(reference, "_choose", lambda active: reference._decode(
        [reference._prompt_ids(e.messages) for e in active], cfg.max_action_tokens))
    want = reference.run(QUESTIONS)
    assert reference_decodes, "the reference decoded full prompts"
    for a, b in zip(got, want):
        assert a["transcript"] == b["transcript"] and a["pred"] == b["pred"]
        assert a["format_errors"] == b["format_errors"]
