"""Generators: write the assistant's next message (thought, tool argument or final answer).

* :class:`LocalGenerator` runs the in-process JAX model (``load_pretrained``; default the
  embedded SmolLM2-135M-Instruct) with its chat template; greedy unless a temperature is set.
  :meth:`LocalGenerator.complete_many` decodes many conversations in one ``model.generate``
  call, which is how the driver should batch questions.
* :class:`OpenAIGenerator` calls any OpenAI-compatible chat endpoint (OpenAI, or a vLLM server
  with Llama-3-8B-Instruct as in the paper) with the judge's retry helper.

Stop strings are applied on the host after decoding: the text is cut before the earliest
occurrence of any of them (the stop string itself is dropped, as the OpenAI API does).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal, Mapping, Sequence

from spark_jax.backends.accounting import BackendStats, CostTracker
from spark_jax.backends.endpoint_config import EndpointConfig
from spark_jax.backends.model_thread import run_on_model_thread
from spark_jax.backends.openai_client import ChatEndpoint
from spark_jax.backends.retry import RequestFailed, RetryPolicy
from spark_jax.protocol.chat import encode_chat, end_of_turn_ids

Messages = Sequence[Mapping[str, str]]

# The OpenAI API accepts at most this many stop sequences; the rest are applied on the host.
MAX_API_STOP = 4
# End-of-turn tokens of the chat templates we support, used as EOS next to the config's.


class GenerationError(RuntimeError):
    """A completion that could not be produced (request failed for good, empty reply)."""


def apply_stop(text: str, stop: Sequence[str] | None) -> str:
    """``text`` cut before the earliest occurrence of any stop string (unchanged if none occurs)."""
    if not stop:
        return text
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut]


# ---- in-process model ----------------------------------------------------------------------


class LocalGenerator:
    """``await complete(messages, max_tokens=, stop=)`` on a PretrainedModel."""

    def __init__(self, model: Any, *, name: str | None = None, temperature: float = 0.0, seed: int = 0):
        if model.tokenizer is None:
            raise ValueError("the local generator needs a model with a tokenizer (a directory with tokenizer files)")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.model = model
        self.name = f"local:{name or 'model'}"
        self.temperature = temperature
        self.seed = seed
        self.eos_ids = end_of_turn_ids(model)
        self.stats = BackendStats()
        self._batches = 0  # advances the sampling seed so successive calls differ, reproducibly

    def complete_many_sync(self, conversations: Sequence[Messages], *, max_tokens: int,
                           stop: Sequence[str] | None = None) -> list[str]:
        """One ``model.generate`` call for all conversations (runs on the caller's thread)."""
        if not conversations:
            return []
        tok = self.model.tokenizer
        prompts = [encode_chat(tok, list(m)) for m in conversations]
        limit = self.model.config.max_position_embeddings
        for i, p in enumerate(prompts):
            if len(p) + max_tokens > limit:
                raise GenerationError(
                    f"conversation {i}: {len(p)} prompt tokens + max_tokens={max_tokens} exceed the model's "
                    f"{limit} positions"
                )
        seed = self.seed + self._batches
        self._batches += 1
        self.stats.calls += len(prompts)
        outs = self.model.generate(prompts, max_tokens, self.temperature, seed, eos_token_ids=self.eos_ids)
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        self.stats.completion_tokens += sum(len(o) for o in outs)
        return [apply_stop(tok.decode(o, skip_special_tokens=True), stop) for o in outs]

    async def complete_many(self, conversations: Sequence[Messages], *, max_tokens: int,
                            stop: Sequence[str] | None = None) -> list[str]:
        """Batched completions on the model's worker thread (the event loop stays free)."""
        return await run_on_model_thread(self.model, self.complete_many_sync, conversations,
                                         max_tokens=max_tokens, stop=stop)

    async def complete(self, messages: Messages, *, max_tokens: int, stop: Sequence[str] | None = None) -> str:
        return (await self.complete_many([messages], max_tokens=max_tokens, stop=stop))[0]


# ---- OpenAI-compatible endpoint ------------------------------------------------------------


class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint: ``OpenAIGenerator("http://host:8000/v1", "meta-llama/...")``."""

    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key: str | None = None,
        *,
        concurrency: int = 16,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        temperature: float = 0.0,
        prices: Mapping[str, tuple[float, float]] | None = None,
        max_cost_usd: float | None = None,
        tracker: CostTracker | None = None,
        retry: RetryPolicy | None = None,
    ):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if tracker is not None and max_cost_usd is not None:
            raise ValueError("give either a shared tracker or max_cost_usd, not both")
        self.name = model
        self.temperature = temperature
        self.stats = BackendStats()
        self.tracker = tracker if tracker is not None else CostTracker(max_cost_usd)
        self.endpoint = ChatEndpoint(
            model=model, base_url=base_url, api_key=api_key, timeout_s=timeout_s, concurrency=concurrency,
            retry=retry if retry is not None else RetryPolicy(max_retries=max_retries),
            prices=prices, tracker=self.tracker, stats=self.stats, what=f"generation request to {model}",
        )

    async def complete(self, messages: Messages, *, max_tokens: int, stop: Sequence[str] | None = None) -> str:
        """The reply text; raises BudgetExceeded before a paid call past the budget, or GenerationError."""
        kwargs: dict[str, Any] = {"messages": [dict(m) for m in messages], "max_tokens": max_tokens,
                                  "temperature": self.temperature}
        if stop:
            kwargs["stop"] = list(stop)[:MAX_API_STOP]
        self.tracker.check()
        async with self.endpoint.semaphore:
            self.tracker.check()
            self.stats.calls += 1
            try:
                res = await self.endpoint.create(**kwargs)
            except RequestFailed as e:
                self.stats.failures += 1
                raise GenerationError(str(e)) from e
        if res.content is None:
            self.stats.failures += 1
            raise GenerationError(f"{self.name} returned no message content (finish_reason={res.finish_reason})")
        return apply_stop(res.content, stop)

    async def aclose(self) -> None:
        await self.endpoint.aclose()


# ---- config and factory --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GeneratorConfig(EndpointConfig):
    """How Stage 1 writes thoughts, tool arguments and answers (endpoint fields: ``EndpointConfig``).

    backend "local": ``model`` is a ``load_pretrained`` path (default "embedded",
    SmolLM2-135M-Instruct). backend "openai": ``model`` is the served model name and
    ``base_url`` the endpoint (None = api.openai.com).
    """

    backend: Literal["local", "openai"] = "local"
    model: str | None = None
    seed: int = 0
    timeout_s: float = 120.0  # a generation may be long; the judge's 60 s is for a short JSON reply

    def __post_init__(self) -> None:
        if self.backend not in ("local", "openai"):
            raise ValueError(f"generator backend must be 'local' or 'openai', got {self.backend!r}")
        if self.model is None:
            if self.backend == "openai":
                raise ValueError("generator backend 'openai' needs model (the served model name)")
            object.__setattr__(self, "model", "embedded")
        self.check_endpoint("generator")


def build_generator(cfg: GeneratorConfig, local_model: Any = None, *, tracker: CostTracker | None = None):
    """The generator ``cfg`` describes; ``local_model`` (a PretrainedModel) avoids a second load."""
    if cfg.backend == "local":
        if local_model is None:
            from spark_jax.model.pretrained import load_pretrained  # deferred: jax start-up, not needed for APIs

            local_model = load_pretrained(cfg.model)
        return LocalGenerator(local_model, name=cfg.model, temperature=cfg.temperature, seed=cfg.seed)
    if tracker is None:
        tracker = CostTracker(cfg.max_cost_usd)
    return OpenAIGenerator(
        cfg.base_url, cfg.model, os.environ.get(cfg.api_key_env), concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s, temperature=cfg.temperature,
        prices={k: tuple(v) for k, v in cfg.prices.items()}, tracker=tracker, retry=cfg.retry_policy(),
    )
