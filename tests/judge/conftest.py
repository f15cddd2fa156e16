"""Fixtures for judge tests: a loopback OpenAI-compatible server, a sample request, tiny models."""

from __future__ import annotations

import pytest

from spark_jax.protocol.interfaces import JudgeRequest
from spark_jax.testing.openai_loopback import LoopbackOpenAIServer

NINE_ACTIONS = ("calculator", "python", "sympy", "units", "chemistry", "constants", "finance", "search", "cot")


@pytest.fixture
def judge_loopback():
    """A fresh loopback server per test (its script and request log start empty)."""
    with LoopbackOpenAIServer() as srv:
        yield srv


@pytest.fixture
def judge_request() -> JudgeRequest:
    question = {
        "question_id": 70,
        "question": "A 2.0 kg mass moves at 3.0 m/s. What is its kinetic energy?",
        "options": ["3 J", "6 J", "9 J", "18 J"],
        "category": "physics",
    }
    messages = [
        {"role": "system", "content": "Solve step by step with tools."},
        {"role": "user", "content": question["question"] + "\nOptions: A. 3 J B. 6 J C. 9 J D. 18 J"},
        {"role": "assistant", "content": "Action: cot\nInput: KE = m v^2 / 2."},
        {"role": "user", "content": "Observation: noted."},
    ]
    return JudgeRequest(question=question, messages=messages, step=1, actions=NINE_ACTIONS)


@pytest.fixture(scope="session")
def tiny_chat_model_split_digits(tmp_path_factory):
    """PretrainedModel: random tiny Llama whose tokenizer writes "10" as "1" "0" (like SmolLM2)."""
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    return load_pretrained(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_split"), split_digits=True))


@pytest.fixture(scope="session")
def tiny_chat_model_single_ten(tmp_path_factory):
    """PretrainedModel: random tiny Llama whose tokenizer has a single "10" token (like Llama 3)."""
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    return load_pretrained(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_ten"), seed=1, split_digits=False))
