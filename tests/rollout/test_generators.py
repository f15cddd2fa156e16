"""LocalGenerator on a tiny random model; OpenAIGenerator against a loopback server."""

import asyncio

import pytest

from spark_jax.backends.accounting import BudgetExceeded
from spark_jax.backends.retry import RetryPolicy
from spark_jax.rollout.generators import (
    GenerationError,
    GeneratorConfig,
    LocalGenerator,
    OpenAIGenerator,
    apply_stop,
    build_generator,
)
from spark_jax.testing.openai_loopback import Behaviour, LoopbackOpenAIServer, ok, rate_limited, server_error

FAST = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)
CONVO = [{"role": "system", "content": "Solve the question ."},
         {"role": "user", "content": "what is the sum of 2 and 3 ?"}]


def run(coro):
    return asyncio.run(coro)


def test_apply_stop_cuts_at_the_earliest_stop():
    assert apply_stop("Action: cot\nInput: x\nObservation: y", ["\nObservation:"]) == "Action: cot\nInput: x"
    assert apply_stop("a STOP b END c", ["END", "STOP"]) == "a "
    assert apply_stop("abc", None) == "abc" and apply_stop("abc", ["", "zz"]) == "abc"


# ---- local ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_chat_generator_model(tmp_path_factory):
    from spark_jax.model.pretrained import load_pretrained
    from spark_jax.testing.tiny_chat import build_tiny_chat_model

    return load_pretrained(build_tiny_chat_model(tmp_path_factory.mktemp("tiny_gen")))


def test_local_complete_is_greedy_and_matches_the_batched_call(tiny_chat_generator_model):
    gen = LocalGenerator(tiny_chat_generator_model, name="tiny")
    other = [{"role": "user", "content": "the energy of a mass"}]
    one = run(gen.complete(CONVO, max_tokens=8))
    again = run(gen.complete(CONVO, max_tokens=8))
    both = run(gen.complete_many([CONVO, other], max_tokens=8))
    assert isinstance(one, str) and one == again  # greedy: deterministic
    assert both[0] == one  # batching (left padding) does not change a greedy answer
    assert gen.stats.calls == 4 and gen.stats.completion_tokens > 0


def test_local_stop_strings_are_applied_after_decoding(tiny_chat_generator_model):
    gen = LocalGenerator(tiny_chat_generator_model)
    full = run(gen.complete(CONVO, max_tokens=8))
    words = full.split()
    assert len(words) >= 2, full
    cut = run(gen.complete(CONVO, max_tokens=8, stop=[" " + words[1]]))
    assert cut == full[: full.index(" " + words[1])]


def test_local_sampling_uses_temperature_and_advancing_seeds(tiny_chat_generator_model):
    gen = LocalGenerator(tiny_chat_generator_model, temperature=5.0, seed=3)
    outs = {run(gen.complete(CONVO, max_tokens=8)) for _ in range(3)}
    assert len(outs) > 1  # a hot random model gives different samples on successive calls
    replay = LocalGenerator(tiny_chat_generator_model, temperature=5.0, seed=3)
    assert run(replay.complete(CONVO, max_tokens=8)) in outs  # reproducible from the seed


def test_local_refuses_a_prompt_past_the_context(tiny_chat_generator_model):
    gen = LocalGenerator(tiny_chat_generator_model)
    limit = tiny_chat_generator_model.config.max_position_embeddings
    with pytest.raises(GenerationError, match=f"exceed the model's {limit} positions"):
        run(gen.complete([{"role": "user", "content": "mass " * (limit - 4)}], max_tokens=16))


def test_build_local_generator(tiny_chat_generator_model):
    gen = build_generator(GeneratorConfig(), local_model=tiny_chat_generator_model)
    assert isinstance(gen, LocalGenerator) and gen.name == "local:embedded"


# ---- OpenAI-compatible ------------------------------------------------------------------------


@pytest.fixture
def gen_loopback():
    with LoopbackOpenAIServer(default=lambda body: ok("Action: cot\nInput: 2 + 3 = 5\nObservation: x")) as srv:
        yield srv


def test_openai_generator_sends_the_conversation_and_applies_stop(gen_loopback):
    gen = OpenAIGenerator(gen_loopback.base_url, "meta-llama/Meta-Llama-3-8B-Instruct", retry=FAST)
    text = run(gen.complete(CONVO, max_tokens=64, stop=["\nObservation:"]))
    assert text == "Action: cot\nInput: 2 + 3 = 5"
    body = gen_loopback.requests[0].body
    assert body["model"] == "meta-llama/Meta-Llama-3-8B-Instruct" and body["messages"] == CONVO
    assert body["max_tokens"] == 64 and body["stop"] == ["\nObservation:"] and "response_format" not in body
    assert gen.stats.calls == 1 and gen.stats.prompt_tokens == 100


def test_openai_generator_sends_at_most_four_stops_and_applies_all(gen_loopback):
    gen = OpenAIGenerator(gen_loopback.base_url, "m", retry=FAST)
    stops = ["zz1", "zz2", "zz3", "zz4", "= 5"]
    assert run(gen.complete(CONVO, max_tokens=8, stop=stops)) == "Action: cot\nInput: 2 + 3 "
    assert gen_loopback.requests[0].body["stop"] == stops[:4]


def test_openai_generator_retries_with_the_shared_helper(gen_loopback):
    gen_loopback.script([rate_limited("0.05"), server_error(502)])
    gen = OpenAIGenerator(gen_loopback.base_url, "m", retry=FAST)
    assert run(gen.complete(CONVO, max_tokens=8)).startswith("Action: cot")
    assert len(gen_loopback.requests) == 3 and gen.stats.retries == 2


def test_openai_generator_failure_raises(gen_loopback):
    gen_loopback.script([server_error(500)] * 5)
    gen = OpenAIGenerator(gen_loopback.base_url, "m", retry=FAST)
    with pytest.raises(GenerationError, match="after 3 attempts"):
        run(gen.complete(CONVO, max_tokens=8))
    assert len(gen_loopback.requests) == 3 and gen.stats.failures == 1


def test_openai_generator_budget(gen_loopback):
    gen_loopback.default = lambda body: Behaviour(content="x", prompt_tokens=10_000, completion_tokens=0)
    gen = OpenAIGenerator(gen_loopback.base_url, "gpt-4o-mini", max_cost_usd=0.001, retry=FAST)
    run(gen.complete(CONVO, max_tokens=8))  # 10k tokens * $0.15/1M = $0.0015 >= $0.001
    with pytest.raises(BudgetExceeded):
        run(gen.complete(CONVO, max_tokens=8))
    assert len(gen_loopback.requests) == 1


def test_generator_config_validation_and_factory(gen_loopback, monkeypatch):
    with pytest.raises(ValueError, match="needs model"):
        GeneratorConfig(backend="openai")
    with pytest.raises(ValueError, match="backend"):
        GeneratorConfig(backend="vllm")
    with pytest.raises(ValueError, match="base_url"):
        GeneratorConfig(backend="openai", model="m", base_url="localhost:8000")
    with pytest.raises(ValueError, match=r"prices\['m'\]"):
        GeneratorConfig(backend="openai", model="m", prices={"m": [1.0]})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = GeneratorConfig(backend="openai", model="llama", base_url=gen_loopback.base_url, max_retries=0)
    gen = build_generator(cfg)
    assert isinstance(gen, OpenAIGenerator) and gen.endpoint.retry.max_retries == 0
    assert run(gen.complete(CONVO, max_tokens=4)).startswith("Action")
    assert gen_loopback.requests[0].headers["authorization"] == "Bearer not-needed"
