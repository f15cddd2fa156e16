"""The evaluation agent: strict parsing, format errors, tools, forced answers, both modes."""

from __future__ import annotations

import collections
import threading
import time
import types

import pytest

from spark_jax.eval.agent import AgentConfig, PolicyAgent, action_names
from spark_jax.tools import ToolResult

QUESTION = {"question_id": 7, "category": "math", "question": "What is 17 times 23?",
            "options": ["381", "391", "401", "371"], "answer": "B", "answer_index": 1}


class ScriptedAgent(PolicyAgent):
    """Replays fixed policy messages instead of decoding (the loop logic under test is real)."""

    def __init__(self, script, final="the answer is (B)", letter="C", runner=None, **kw):
        tok = types.SimpleNamespace(chat_template="x")
        model = types.SimpleNamespace(tokenizer=tok, config=types.SimpleNamespace(eos_token_ids=(2,)))
        self.script = list(script)
        self.final = final
        self.tool_calls = []

        def default_runner(name, arg, timeout_s=None):
            self.tool_calls.append((name, arg))
            return ToolResult(ok=True, output="391", error=None, elapsed_s=0.0)

        self.model, self.config, self.name, self.eos = model, AgentConfig(**kw), "scripted", (2,)
        self.tool_runner, self._seed = runner or default_runner, 0
        self.phase_seconds, self._session, self._chunk, self._system_ids = collections.Counter(), None, [], {}
        self.session_restarts = 0
        self.letter, self.letters_read = letter, 0

    def _choose(self, active):
        return [self.script.pop(0) for _ in active]

    def _decode(self, prompt_ids, max_new):
        return [self.final for _ in prompt_ids]

    def _prompt_ids(self, messages):
        return [1]

    def _read_letters(self, eps):
        self.letters_read += len(eps)
        return [self.letter for _ in eps]


def test_tool_then_answer():
    agent = ScriptedAgent(["Action: calculator\nInput: 17*23", "Action: answer\nInput: the answer is (B)"])
    (row,) = agent.run([QUESTION])
    assert agent.tool_calls == [("calculator", "17*23")]
    assert row["actions"] == ["calculator", "answer"] and row["steps"] == 2
    assert row["pred"] == "B" and row["correct"] and not row["forced_answer"] and row["format_errors"] == 0
    assert row["transcript"][-2] == {"role": "user", "content": "Observation: 391"}


def test_format_error_is_shown_counted_and_not_an_action():
    agent = ScriptedAgent(["I think it is 391", "Action: teleport\nInput: x", "Action: cot\nInput: 17*23=391",
                           "Action: answer\nInput: So the answer is (B)."])
    (row,) = agent.run([QUESTION])
    assert row["format_errors"] == 2 and row["actions"] == ["cot", "answer"] and row["steps"] == 4
    errors = [m["content"] for m in row["transcript"] if m["content"].startswith("Observation: Format error")]
    assert len(errors) == 2 and "unknown action 'teleport'" in errors[1]
    assert agent.tool_calls == []  # cot runs no tool


def test_forced_free_text_answer_after_max_steps():
    agent = ScriptedAgent(["Action: cot\nInput: hmm"] * 2, final="no idea, sorry", max_steps=2, answer_mode="text")
    (row,) = agent.run([QUESTION])
    assert row["forced_answer"] and row["steps"] == 3 and row["pred"] is None and not row["correct_strict"]
    assert row["actions"] == ["cot", "cot", "answer"] and agent.letters_read == 0
    # the official rule credits its fallback guess for 4 options (index 3, "D"): wrong here
    assert not row["correct"] and row["num_options"] == 4


def test_forced_answer_is_read_in_letter_mode():
    agent = ScriptedAgent(["Action: cot\nInput: hmm"] * 2, final="no idea, sorry", max_steps=2, letter="B")
    (row,) = agent.run([QUESTION])
    assert row["forced_answer"] and row["answer_scored"] and row["pred"] == "B" and row["correct"]
    assert row["transcript"][-1] == {"role": "assistant", "content": "Action: answer\nInput: The answer is (B)."}
    assert agent.letters_read == 1


def test_a_written_answer_without_a_letter_is_read_in_letter_mode():
    agent = ScriptedAgent(["Action: answer\nInput: not sure, sorry"], letter="D")
    (row,) = agent.run([QUESTION])
    assert row["pred"] == "D" and row["answer_scored"] and not row["forced_answer"]
    assert row["written_answer"] == "not sure, sorry" and row["steps"] == 1
    assert [m["role"] for m in row["transcript"]] == ["system", "user", "assistant"]
    # a readable written answer is kept as it is
    agent = ScriptedAgent(["Action: answer\nInput: so the answer is (A)"], letter="D")
    (row,) = agent.run([QUESTION])
    assert row["pred"] == "A" and not row["answer_scored"] and agent.letters_read == 0


def test_one_steps_tool_calls_run_concurrently_within_the_pool():
    running, peak, lock = [0], [0], threading.Lock()

    def slow(name, arg, timeout_s=None):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return ToolResult(ok=True, output=arg, error=None, elapsed_s=0.2)

    questions = [dict(QUESTION, question_id=i) for i in range(6)]
    script = [f"Action: python\nInput: print({i})" for i in range(6)] + ["Action: answer\nInput: (B)"] * 6
    agent = ScriptedAgent(script, runner=slow, tool_workers=3)
    rows = agent.run(questions)
    assert peak[0] == 3  # bounded by tool_workers
    # each question got its own observation, in order
    assert [r["transcript"][3]["content"] for r in rows] == [f"Observation: print({i})" for i in range(6)]


def test_imagined_observation_is_cut_off():
    agent = ScriptedAgent(["Action: units\nInput: 5 km/h to m/s\nObservation: 1.39 m/s",
                           "Action: answer\nInput: the answer is (A)"])
    (row,) = agent.run([QUESTION])
    assert agent.tool_calls == [("units", "5 km/h to m/s")] and row["pred"] == "A" and not row["correct"]


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        AgentConfig(mode="guess")
    with pytest.raises(ValueError, match="max_steps"):
        AgentConfig(max_steps=0)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    return load_pretrained(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_policy")))


@pytest.mark.parametrize("mode", ["generate", "score"])
def test_real_decoding_on_a_tiny_model(tiny_policy, mode):
    agent = PolicyAgent(tiny_policy, AgentConfig(mode=mode, max_steps=2, max_action_tokens=8, max_answer_tokens=8))
    rows = agent.run([QUESTION, dict(QUESTION, question_id=8, category="law")])
    assert [r["question_id"] for r in rows] == [7, 8]
    for r in rows:
        assert 1 <= r["steps"] <= 3 and r["actions"][-1] == "answer"
        assert set(r["actions"]) <= set(action_names())
        if mode == "score":
            assert r["format_errors"] == 0  # the header is chosen, not written


def test_score_actions_ranks_all_ten(tiny_policy):
    agent = PolicyAgent(tiny_policy, AgentConfig(mode="score"))
    scores = agent.score_actions([1, 3, 10, 11])
    assert list(scores) == list(action_names()) and all(s < 0 for s in scores.values())


def test_score_mode_reuses_the_system_prompt_and_scores_as_without_it(tiny_policy):
    from spark_jax.protocol import prompts
    from spark_jax.protocol.chat import encode_chat

    agent = PolicyAgent(tiny_policy, AgentConfig(mode="score"))
    messages = prompts.initial_messages(QUESTION)
    ids = encode_chat(tiny_policy.tokenizer, messages)
    n = agent._system_prefix_len(messages, ids)
    assert 0 < n < len(ids)  # the rendered system turn leads the state
    with_prefix, whole = agent.score_actions(ids, n), agent.score_actions(ids)
    assert with_prefix == pytest.approx(whole, abs=1e-3)  # ten summed header log-probs
    assert max(with_prefix, key=with_prefix.get) == max(whole, key=whole.get)
    # a state that does not start with its own system turn scores without a prefix
    assert agent._system_prefix_len([{"role": "user", "content": "hi"}], ids) == 0
    assert agent._system_prefix_len(messages, ids[5:]) == 0
