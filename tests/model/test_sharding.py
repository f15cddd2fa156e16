"""Sharded execution on 8 simulated CPU devices equals the single-device result (float32, 1e-5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from spark_jax.model.sharding import fit_spec, param_spec

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    import spark_jax
    from spark_jax.model.sharding import make_mesh

    path = sys.argv[1]
    assert len(jax.devices()) == 8, jax.devices()
    ids = np.random.default_rng(0).integers(0, 256, (8, 40)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[3, :7] = 0  # a left-padded row
    single = spark_jax.load_pretrained(path)
    want = single.logits(ids, mask)
    want_gen = single.generate([[5, 6, 7], [9, 10, 11, 12]], 8, eos_token_ids=())
    report = {}
    for shape in [(8, 1, 1), (1, 8, 1), (1, 2, 4)]:
        model = spark_jax.load_pretrained(path, mesh=shape)
        got = model.logits(ids, mask)
        q = model.state["layers"][0]["self_attn"]["q_proj"]["kernel"][...]
        report[str(shape)] = {
            "max_abs_diff": float(np.abs(got - want).max()),
            "q_proj_spec": [str(a) for a in q.sharding.spec],
            "q_proj_devices": len(q.sharding.device_set),
            "generate_equal": model.generate([[5, 6, 7], [9, 10, 11, 12]], 8, eos_token_ids=()) == want_gen,
        }
    print("REPORT" + json.dumps(report))
    """
)


@pytest.mark.slow
def test_meshes_match_single_device(tiny_hf, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(script), str(tiny_hf[0])], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("REPORT"))
    report = json.loads(line[len("REPORT"):])
    for shape, r in report.items():
        assert r["max_abs_diff"] <= 1e-5, (shape, r)
        assert r["generate_equal"], shape
    assert report["(1, 2, 4)"]["q_proj_spec"] == ["fsdp", "tensor"]
    assert report["(1, 8, 1)"]["q_proj_spec"] == ["fsdp", "None"]
    assert report["(1, 2, 4)"]["q_proj_devices"] == 8


class _Mesh:
    def __init__(self, **shape):
        self.shape = shape


def test_fit_spec_drops_axes_that_do_not_divide():
    mesh = _Mesh(data=1, fsdp=2, tensor=4)
    # SmolLM2's k_proj: 576 x 192 splits both ways; a 9-head dim of 9*64=576 also splits by 4.
    assert fit_spec(P("fsdp", "tensor"), (576, 192), mesh) == P("fsdp", "tensor")
    assert fit_spec(P("fsdp", "tensor"), (576, 6), mesh) == P("fsdp", None)
    assert fit_spec(P(("data", "fsdp")), (3, 5), mesh) == P(None, None)


def test_rules_cover_every_weight_kind():
    assert param_spec("layers/3/self_attn/q_proj/kernel", (64, 64)) == P("fsdp", "tensor")
    assert param_spec("layers/3/mlp/down_proj/kernel", (128, 64)) == P("tensor", "fsdp")
    assert param_spec("embed_tokens/embedding", (256, 64)) == P("tensor", "fsdp")
    assert param_spec("layers/0/input_layernorm/weight", (64,)) == P()


def test_qlora_nf4_kernels_are_sharded_like_the_kernels_they_replace():
    # qwix's NF4 leaves were replicated on every device before these rules existed.
    assert param_spec("layers/3/self_attn/q_proj/kernel/array/qvalue", (64, 64)) == P("fsdp", "tensor")
    assert param_spec("layers/3/self_attn/q_proj/kernel/array/scale", (2, 64)) == P("fsdp", "tensor")
    assert param_spec("layers/3/mlp/down_proj/kernel/array/qvalue", (128, 64)) == P("tensor", "fsdp")
    mesh = _Mesh(data=1, fsdp=4, tensor=1)
    assert fit_spec(param_spec("layers/0/mlp/up_proj/kernel/array/scale", (2, 128)), (2, 128), mesh) == P(None, None)
