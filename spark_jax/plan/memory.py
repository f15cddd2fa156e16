"""Per-device memory of a Stage 2 train step, estimated before any weights are loaded.

Static state is counted exactly from the real structures: the model, adapters (qwix LoRA /
NF4 QLoRA), optimizer state and reference copy are built abstractly (``jax.eval_shape``: no
memory, no random init) with the trainer's own code, and each array is divided by the mesh
axes that the sharding rules (``spark_jax.model.sharding``) put on it. NF4 codes count 4 bits.

Activations are a model (see ``activation_bytes``): what the backward pass keeps per token
and layer, attention scores included (our attention materialises [heads, T, T] in float32),
plus the float32 vocabulary logits of the loss, for one micro-batch on one device. With
``ppo.kl_estimator: full`` the step also keeps the reference's float32 log-softmax at the
action positions for the whole batch ([B / batch ways, A, V / tensor], ``reference_logprobs``)
and PPO's loss keeps FULL_KL_BUFFERS more [A, V] float32 buffers per micro-batch row. When the
step scores the ten action headers (``candidates.headers_needed``), each row grows by its header
block (``header_block_tokens``), which the activations and the logits count.

On CPU the plan counts the activations without remat whatever ``remat`` says: XLA's CPU buffer
assignment does not shrink under ``jax.checkpoint`` (jax-ml/jax#19822; measured against
``measure.compiled_step_memory`` in docs/results/plan-cpu-remat-2026-12-06). GPU and TPU plans keep
the remat model.

All figures are bytes per device; GB below means 1e9 bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from spark_jax.model.config import LlamaConfig
from spark_jax.model.llama import Llama
from spark_jax.model.sharding import fit_spec, param_spec, path_str
from spark_jax.rl.candidates import PAD_TO
from spark_jax.rl.config import TrainConfig
from spark_jax.rl.optim import make_optimizer
from spark_jax.rl.steps import init_state
from spark_jax.rl.trainer import build_models, split_trainable

# Usable share of a device's memory: the runtime, compiler temporaries this model does not
# see, and fragmentation take the rest (XLA on GPU reserves 75% unless told otherwise; the
# GPU helper in spark_jax.core.jax_setup raises that to 90%).
USABLE_FRACTION = 0.9
# float32 [T, V] buffers alive at the loss's peak: the logits, their log-softmax and its gradient.
LOGIT_BUFFERS = 3
# PPO with kl_estimator "full" adds, per micro-batch row, the softmax and (log p - log ref) kept
# for the exact KL's backward and the micro-batch's slice of the reference log-softmax. Measured
# with XLA's memory analysis on CPU (SmolLM2-135M, 4 rows x 1024, A 512; tiny): full - k3 = the
# whole-batch reference log-softmax + 3 [A, V] float32 buffers per micro-batch row.
FULL_KL_BUFFERS = 3
# The candidate objective's header block (rl.candidates.extended_inputs): each state of a row gets
# the ten action headers appended, S x H tokens. H is 61 for SmolLM2's tokenizer
# (tests/plan/test_memory.py checks the bound); 80 leaves room for longer tokenisations.
PLANNED_HEADER_TOKENS = 80
# States per packed row where the Stage 1 run does not say (its manifest's rollout steps K):
# SPaRK's 5-step trajectories, with room to spare.
PLANNED_SPANS = 8


class MeshShape:
    """What ``fit_spec`` needs of a mesh: the axis sizes."""

    def __init__(self, shape):
        self.shape = dict(zip(("data", "fsdp", "tensor"), (int(s) for s in shape)))

    @property
    def size(self) -> int:
        return math.prod(self.shape.values())


@dataclasses.dataclass
class AbstractRun:
    """ShapeDtypeStruct trees of one run: trainable params, frozen params, reference, train state."""

    policy_graphdef: Any
    critic_graphdef: Any
    params: Any
    frozen: Any
    ref: Any
    state: Any
    optimizer: Any


def abstract_run(cfg: TrainConfig, arch: LlamaConfig) -> AbstractRun:
    """The trainer's structures for ``cfg`` on the architecture ``arch``, without memory."""
    arch = arch.replace(param_dtype=cfg.param_dtype, dtype=cfg.dtype, remat=False)
    graphdefs = {}

    def build():
        policy, critic = build_models(cfg, Llama(arch, rngs=nnx.Rngs(cfg.seed)))
        graphdefs["policy"], p_train, p_frozen = split_trainable(policy, cfg)
        params, frozen = {"policy": p_train}, {"policy": p_frozen}
        graphdefs["critic"] = None
        if critic is not None:
            graphdefs["critic"], params["critic"], frozen["critic"] = split_trainable(critic, cfg, critic=True)
        ref = jax.tree.map(jnp.copy, p_train) if cfg.lora.rank == 0 else None
        return params, frozen, ref

    params, frozen, ref = jax.eval_shape(build)
    optimizer = make_optimizer(cfg.optim, cfg.steps * cfg.updates_per_step)
    state = jax.eval_shape(lambda p: init_state(p, optimizer), params)
    return AbstractRun(graphdefs["policy"], graphdefs["critic"], params, frozen, ref, state, optimizer)


def array_bytes(x) -> float:
    dtype = jnp.dtype(x.dtype)
    bits = 4 if dtype.name in ("int4", "uint4") else dtype.itemsize * 8
    return math.prod(x.shape) * bits / 8


Leaf = tuple  # (path, shape, dtype name)


def model_leaves(arch: LlamaConfig, dtype: str, prefix: str = "") -> list[Leaf]:
    """Every parameter of ``Llama(arch)`` as (path, shape, dtype), in the model's own paths."""
    d, f, hd = arch.hidden_size, arch.intermediate_size, arch.head_dim
    out: list[Leaf] = [(f"{prefix}embed_tokens/embedding", (arch.vocab_size, d), dtype)]
    projections = {
        "self_attn/q_proj": (d, arch.num_heads * hd), "self_attn/k_proj": (d, arch.num_kv_heads * hd),
        "self_attn/v_proj": (d, arch.num_kv_heads * hd), "self_attn/o_proj": (arch.num_heads * hd, d),
        "mlp/gate_proj": (d, f), "mlp/up_proj": (d, f), "mlp/down_proj": (f, d),
    }
    for i in range(arch.num_layers):
        out.append((f"{prefix}layers/{i}/input_layernorm/weight", (d,), dtype))
        out.append((f"{prefix}layers/{i}/post_attention_layernorm/weight", (d,), dtype))
        out += [(f"{prefix}layers/{i}/{name}/kernel", shape, dtype) for name, shape in projections.items()]
    out.append((f"{prefix}norm/weight", (d,), dtype))
    if not arch.tie_word_embeddings:
        out.append((f"{prefix}lm_head/kernel", (d, arch.vocab_size), dtype))
    return out


def run_leaves(cfg: TrainConfig, arch: LlamaConfig) -> dict[str, list[Leaf]]:
    """The arrays of a run by role, computed from the config alone (fast even for 8B models);
    ``abstract_run`` builds the same structures with the trainer's code (the tests compare them).

    base_weights: frozen weights (NF4 ``kernel/array/{qvalue,scale}`` for QLoRA targets);
    trainable: adapters + critic head, or every weight when full fine-tuning (+ critic copy);
    reference: the frozen KL reference of full fine-tuning. Under LoRA the critic's backbone
    shares the policy's frozen arrays, so it adds no base weights.
    """
    dt = cfg.param_dtype
    lcfg = cfg.lora
    critic = cfg.algo == "ppo" and cfg.ppo.advantage == "value"
    head = [("value_head/kernel", (arch.hidden_size, 1), "float32"), ("value_head/bias", (1,), "float32")]
    plain = model_leaves(arch, dt)
    if lcfg.rank == 0:
        trainable = list(plain)
        if critic:
            trainable += model_leaves(arch, dt, "critic/backbone/") + head
        return {"base_weights": [], "trainable": trainable, "reference": list(plain)}
    base, adapters = [], []
    # qwix makes adapters in the kernel's dtype; next to an NF4 kernel, in the compute dtype (tested)
    lora_dtype = cfg.dtype if lcfg.qlora else dt
    for path, shape, dtype in plain:
        module = path.rsplit("/", 1)[0]
        if path.endswith("/kernel") and re.search(lcfg.target_modules, module):
            fan_in, fan_out = shape
            adapters += [(f"{module}/kernel_lora_a", (fan_in, lcfg.rank), lora_dtype),
                         (f"{module}/kernel_lora_b", (lcfg.rank, fan_out), lora_dtype)]
            if lcfg.qlora:
                tiles = -(-fan_in // lcfg.qlora_tile_size)
                base += [(f"{path}/array/qvalue", shape, "uint4"), (f"{path}/array/scale", (tiles, fan_out), dtype)]
                continue
        base.append((path, shape, dtype))
    trainable = adapters + ([(f"critic/backbone/{p}", s, t) for p, s, t in adapters] + head if critic else [])
    return {"base_weights": base, "trainable": trainable, "reference": []}


def leaves_bytes(leaves: list[Leaf], mesh: MeshShape) -> float:
    return per_device_bytes([jax.ShapeDtypeStruct(s, jnp.dtype(t)) for _, s, t in leaves], mesh,
                            paths=[p for p, _, _ in leaves])


def per_device_bytes(tree, mesh: MeshShape, paths: list[str] | None = None) -> float:
    """Bytes of ``tree`` held by one device under the parameter sharding rules (``paths``: the
    parameter paths of a flat list of arrays)."""
    total = 0.0
    if paths is None:
        items = [(path_str(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree)]
    else:
        items = list(zip(paths, tree))
    for path, x in items:
        spec = fit_spec(param_spec(path, x.shape), x.shape, mesh)
        split = 1
        for axes in spec:
            for name in (axes if isinstance(axes, tuple) else (axes,)):
                if name is not None:
                    split *= mesh.shape[name]
        total += array_bytes(x) / split
    return total


def _split(n: int, ways: int) -> float:
    """n divided over ``ways`` devices when it divides evenly (else replicated, as fit_spec does)."""
    return n / ways if ways > 1 and n % ways == 0 else float(n)


def activation_bytes(arch: LlamaConfig, rows: int, seq: int, *, remat: bool, tensor: int = 1, action_len: int | None = None,
                     lora_rank: int = 0, critic: bool = False, compute_bytes: int = 4,
                     logit_buffers: int = LOGIT_BUFFERS) -> float:
    """Activation memory of one micro-batch of ``rows`` x ``seq`` tokens on one device.

    Per token and layer the backward pass keeps (``a`` = bytes of the compute dtype, head and
    ffn dims split over ``tensor``): a * (6 d + (2 H + 4 KV) hd + 4 F + 7 r) for norms,
    q/k/v before and after RoPE, the attention output, o/gate/up/silu/product/down and the
    LoRA x @ A products, plus H * seq * (4 + a) for the float32 scores and the softmax
    probabilities. With remat only each layer's input (a * d) is kept and one layer is live
    again during its backward. The loss adds ``logit_buffers`` float32 [A, V] buffers per row
    (A = ``action_len``, the projected action positions, at most seq; None: seq);
    the [seq, seq] boolean mask is shared by the layers. A critic runs a second backbone
    (its head is one unit, no vocabulary logits).
    """
    a = compute_bytes
    d, f, hd, L = arch.hidden_size, arch.intermediate_size, arch.head_dim, arch.num_layers
    heads, kv = _split(arch.num_heads, tensor), _split(arch.num_kv_heads, tensor)
    ffn, vocab = _split(f, tensor), _split(arch.vocab_size, tensor)
    per_layer = a * (6 * d + (2 * heads + 4 * kv) * hd + 4 * ffn + 7 * lora_rank) + heads * seq * (4 + a)
    backbone = (L * a * d + per_layer) if remat else L * per_layer
    if critic:
        backbone *= 2
    tokens = rows * seq
    logit_rows = rows * (seq if action_len is None else min(action_len, seq))
    return tokens * backbone + logit_rows * logit_buffers * 4 * vocab + rows * seq * seq


def planned_spans(cfg: TrainConfig) -> int:
    """States per row: 1 without packing; with packing, the rollout steps K in the manifest of the
    Stage 1 run ``cfg.data`` (a row is one trajectory), or PLANNED_SPANS where there is none."""
    if not cfg.packing:
        return 1
    manifest = pathlib.Path(cfg.data) / "manifest.json" if cfg.data else None
    if manifest is None or not manifest.is_file():
        return PLANNED_SPANS
    try:
        steps = json.loads(manifest.read_text())["config"]["steps"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest}: cannot read the rollout steps (config.steps) for the memory plan: {e}") from e
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{manifest}: config.steps must be a positive integer, got {steps!r}")
    return steps


def header_block_tokens(cfg: TrainConfig, seq: int, spans: int | None = None) -> int:
    """Tokens the ten-header block adds to a row of ``seq`` tokens (S x H, padded so the row is a
    multiple of PAD_TO); 0 when the step scores no headers."""
    if not cfg.candidates.headers_needed:
        return 0
    block = (planned_spans(cfg) if spans is None else spans) * PLANNED_HEADER_TOKENS
    return block + (-(seq + block) % PAD_TO)


def kv_cache_bytes(arch: LlamaConfig, rows: int, seq: int, *, tensor: int = 1, compute_bytes: int = 4) -> float:
    """Decoding cache for ``rows`` sequences of ``seq`` tokens: keys and values of every layer."""
    kv = _split(arch.num_kv_heads, tensor)
    return 2 * arch.num_layers * kv * arch.head_dim * compute_bytes * rows * seq


@dataclasses.dataclass
class BucketPlan:
    seq: int
    activations: float          # with the config's remat setting
    activations_no_remat: float
    activations_remat: float
    batch_arrays: float
    reference_logprobs: float   # kl_estimator "full": reference log-softmax [rows, A, V] float32, whole batch
    total: float                # static + gradients + activations + batch arrays + reference_logprobs
    header_block: int = 0       # tokens the ten-header block adds to each row (candidate objective/metrics)


@dataclasses.dataclass
class MemoryPlan:
    """Per-device bytes of one run; ``buckets`` in increasing length (the last is the peak)."""

    devices: int
    mesh: tuple[int, int, int]
    rows_per_device: float      # rows of one micro-batch on one device
    base_weights: float         # frozen parameters (NF4 codes + scales under QLoRA)
    trainable: float            # adapters (or all weights when full fine-tuning), incl. a critic's
    optimizer: float            # AdamW moments (+ count) on the trainable parameters
    reference: float            # full fine-tuning: the frozen copy used as the KL reference
    gradients: float            # accumulated + current micro-batch gradients
    kv_cache: float             # decoding cache for batch_size rows of the longest bucket (not in the total)
    buckets: list[BucketPlan]
    tokens_per_step: int        # batch_size * longest bucket (padded tokens, one optimizer step)
    tokens_per_micro_batch_per_device: float
    num_params: int
    trainable_params: int
    remat_counted: bool = False  # the activations assume remat (cfg.remat, on a device that honours it)

    @property
    def static(self) -> float:
        return self.base_weights + self.trainable + self.optimizer + self.reference

    @property
    def peak(self) -> float:
        return max(b.total for b in self.buckets)


def plan_memory(cfg: TrainConfig, arch: LlamaConfig, device: str = "") -> MemoryPlan:
    """The per-device memory plan of ``cfg`` on the architecture ``arch``, for ``device`` (a key
    of ``plan.devices``, or "cpu"; "" is taken as a device that honours remat)."""
    mesh = MeshShape(cfg.mesh_shape)
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    tensor = mesh.shape["tensor"]
    micro_rows = cfg.batch_size // cfg.grad_accum
    rows_dev = micro_rows / batch_ways if micro_rows % batch_ways == 0 else float(micro_rows)
    step_rows_dev = cfg.batch_size / batch_ways if cfg.batch_size % batch_ways == 0 else float(cfg.batch_size)
    a = jnp.dtype(cfg.dtype).itemsize
    critic = cfg.algo == "ppo" and cfg.ppo.advantage == "value"
    # the exact KL needs the reference's whole distribution at every action position of the batch
    full_kl = cfg.ppo.kl_estimator == "full"
    leaves = run_leaves(cfg, arch)
    trainable = leaves_bytes(leaves["trainable"], mesh)
    static = {
        "base_weights": leaves_bytes(leaves["base_weights"], mesh),
        "trainable": trainable,
        "optimizer": 2 * trainable + 8,  # AdamW mu and nu in the parameters' dtype, + step counts
        "reference": leaves_bytes(leaves["reference"], mesh),
        "gradients": 2 * trainable,
    }
    buckets = []
    spans = planned_spans(cfg) if cfg.candidates.headers_needed else 0
    remat_counted = cfg.remat and device.lower() != "cpu"
    for seq in cfg.seq_buckets:
        # the header block lengthens every row, and its tokens are projected onto the vocabulary too
        extra = header_block_tokens(cfg, seq, spans)
        kw = dict(tensor=tensor, lora_rank=cfg.lora.rank, critic=critic, compute_bytes=a,
                  action_len=min(max(cfg.action_buckets), seq) + extra,
                  logit_buffers=LOGIT_BUFFERS + (FULL_KL_BUFFERS if full_kl and cfg.algo == "ppo" else 0))
        act_plain = activation_bytes(arch, rows_dev, seq + extra, remat=False, **kw)
        act_remat = activation_bytes(arch, rows_dev, seq + extra, remat=True, **kw)
        act = act_remat if remat_counted else act_plain
        # input_ids, targets, attention_mask, loss_mask, action positions/mask/targets + old/ref
        # log-probs (+ advantages): 4 bytes each, counted at seq (an upper bound for the action arrays)
        batch = step_rows_dev * seq * 4 * 10
        action = min(max(cfg.action_buckets), seq)
        ref_lp = step_rows_dev * action * _split(arch.vocab_size, tensor) * 4 if full_kl else 0.0
        total = sum(static.values()) + act + batch + ref_lp
        buckets.append(BucketPlan(seq, act, act_plain, act_remat, batch, ref_lp, total, extra))
    n_train = sum(math.prod(shape) for _, shape, _ in leaves["trainable"])
    return MemoryPlan(
        devices=mesh.size, mesh=tuple(cfg.mesh_shape), rows_per_device=rows_dev, **static,
        kv_cache=kv_cache_bytes(arch, step_rows_dev, max(cfg.seq_buckets), tensor=tensor, compute_bytes=a),
        buckets=buckets, tokens_per_step=cfg.batch_size * max(cfg.seq_buckets),
        tokens_per_micro_batch_per_device=rows_dev * max(cfg.seq_buckets),
        num_params=arch.num_params(), trainable_params=n_train, remat_counted=remat_counted,
    )

