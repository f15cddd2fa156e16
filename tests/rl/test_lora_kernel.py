"""lora_delta's hand-written backward against jax autodiff, and the provider against stock qwix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import qwix
from flax import nnx

from spark_jax.model.config import tiny
from spark_jax.model.llama import Llama, positions_from_mask
from spark_jax.rl.adapters import LoraConfig, apply_lora, lora_modules
from spark_jax.rl.lora_kernel import lora_delta

RTOL = 1e-5  # float32; the two sides associate the same products differently


def _inputs(dtype=jnp.float32, n=24, d=12, r=4, o=20):
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    return (jax.random.normal(k[0], (n, d), dtype), jax.random.normal(k[1], (d, r)),
            jax.random.normal(k[2], (r, o)), jax.random.normal(k[3], (n, o), dtype))


def _reference(x, a, b, scale):
    return ((x @ a.astype(x.dtype)) * scale) @ b.astype(x.dtype)


def test_lora_delta_value_and_gradients_match_autodiff():
    x, a, b, g = _inputs()
    out, vjp = jax.vjp(lambda x, a, b: lora_delta(x, a, b, 2.5), x, a, b)
    want, want_vjp = jax.vjp(lambda x, a, b: _reference(x, a, b, 2.5), x, a, b)
    np.testing.assert_allclose(out, want, rtol=RTOL, atol=1e-5)
    for got_g, want_g in zip(vjp(g), want_vjp(g)):
        np.testing.assert_allclose(got_g, want_g, rtol=RTOL, atol=1e-4)


def test_lora_delta_under_jit_and_bfloat16_keeps_dtypes():
    x, a, b, g = _inputs(jnp.bfloat16)
    out, vjp = jax.jit(lambda x, a, b: jax.vjp(lambda *p: lora_delta(*p, 0.5), x, a, b))(x, a, b)
    assert out.dtype == jnp.bfloat16
    dx, da, db = vjp(g)
    assert (dx.dtype, da.dtype, db.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
    want = _reference(x.astype(jnp.float32), a, b, 0.5)
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=5e-2, atol=5e-2)


def _hidden_grad(model, ids):
    graphdef, lora, rest = nnx.split(model, nnx.LoRAParam, ...)

    def f(lora):
        hidden, _ = nnx.merge(graphdef, lora, rest).hidden_states(ids, positions_from_mask(None, ids.shape))
        return (hidden ** 2).sum(), hidden

    (loss, hidden), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(lora)
    return loss, hidden, grads


@pytest.mark.parametrize("qlora", [False, True])
def test_model_gradients_equal_stock_qwix_provider(qlora):
    cfg = tiny()
    base = Llama(cfg, rngs=nnx.Rngs(0))
    lcfg = LoraConfig(rank=4, alpha=8.0, qlora=qlora, qlora_tile_size=16)
    ours = apply_lora(base, lcfg)
    kwargs = dict(module_path=lcfg.target_modules, rank=4, alpha=8.0)
    if qlora:
        kwargs.update(weight_qtype="nf4", tile_size=16)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 16)).astype(np.int32))
    stock = qwix.apply_lora_to_model(base, qwix.LoraProvider(**kwargs), ids, ids,
                                     methods=("hidden_states",), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(2)
    for (path, mod), stock_mod in zip(lora_modules(ours).items(), lora_modules(stock).values()):
        for name in ("kernel_lora_a", "kernel_lora_b"):
            value = jnp.asarray(rng.normal(scale=0.2, size=getattr(mod, name).shape).astype(np.float32))
            getattr(mod, name)[...] = value
            getattr(stock_mod, name)[...] = value
    loss, hidden, grads = _hidden_grad(ours, ids)
    want_loss, want_hidden, want_grads = _hidden_grad(stock, ids)
    np.testing.assert_allclose(hidden, want_hidden, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    flat, want_flat = jax.tree.leaves(grads), jax.tree.leaves(want_grads)
    assert len(flat) == len(want_flat) == 2 * len(lora_modules(ours))
    for got, want in zip(flat, want_flat):
        scale = float(np.abs(want).max())
        assert scale > 0  # every adapter gets a gradient (B is random, not peft's zeros)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
