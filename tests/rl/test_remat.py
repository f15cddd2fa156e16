"""remat=True under jax.grad with the model merged inside the traced function (as in the
trainer's step): same loss and gradients as without remat. nnx.remat failed here before."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spark_jax.model.config import tiny
from spark_jax.model.llama import Llama
from spark_jax.rl.adapters import LoraConfig, apply_lora


def test_remat_matches_plain_under_grad_with_lora():
    model = apply_lora(Llama(tiny(), rngs=nnx.Rngs(0)), LoraConfig(rank=4, alpha=8.0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(2, 16)), jnp.int32)
    results = []
    for remat in (False, True):
        model.config = model.config.replace(remat=remat)
        graphdef, lora, rest = nnx.split(model, nnx.LoRAParam, ...)

        @jax.jit
        def loss_and_grad(lora, rest):
            def loss(lora):
                logits, _ = nnx.merge(graphdef, lora, rest)(ids)
                return jax.nn.logsumexp(logits, -1).mean() + (logits[..., 3] ** 2).mean()

            return jax.lax.scan(lambda c, _: (c, jax.value_and_grad(loss)(lora)), 0, None, length=1)[1]

        results.append(jax.tree.map(lambda x: np.asarray(x[0]), loss_and_grad(lora, rest)))
    for a, b in zip(jax.tree_util.tree_leaves(results[0]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
