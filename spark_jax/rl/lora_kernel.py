"""The LoRA update ``(x @ A) @ B * scale`` with a hand-written backward, and the qwix provider
that uses it.

Why: jax's automatic transpose of the adapter product contracts the token axis of the
big [N, out] cotangent against the [N, r] rank activations. XLA:CPU lays those dots out by
transposing the [N, out] cotangent (and scaling it, a second full pass) before an Eigen dot:
on SmolLM2-135M (batch 1 x 512, rank 16, seven projections per layer) those copies were
~25% of a LoRA backward pass. Here the token contraction is written ``h.T @ g`` / ``x.T @ dh``
with the rank side as the transposed operand, and the scale sits on the [N, r] tensor, so the
backward makes no copy of anything wider than r.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import qwix

try:  # qwix internals the provider needs; without them the stock provider is used
    from qwix._src.providers import lora as _qwix_lora
    from qwix._src.providers import ptq as _qwix_ptq

    _QWIX_INTERNALS = all(hasattr(_qwix_lora, n) for n in (
        "_create_lora_layer_shapes", "_get_or_create_lora_params", "flax_util")) and hasattr(_qwix_ptq, "WithAux")
except ImportError:  # pragma: no cover - depends on the installed qwix
    _QWIX_INTERNALS = False


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def lora_delta(x_nd: jax.Array, a_dr: jax.Array, b_ro: jax.Array, scale: float) -> jax.Array:
    """((x @ A) * scale) @ B: x [N, D], A [D, r], B [r, O] -> [N, O] in x's dtype."""
    return _forward(x_nd, a_dr, b_ro, scale)[0]


def _forward(x_nd, a_dr, b_ro, scale):
    h_nr = jnp.matmul(x_nd, a_dr.astype(x_nd.dtype)) * jnp.asarray(scale, x_nd.dtype)
    return jnp.matmul(h_nr, b_ro.astype(x_nd.dtype)), h_nr


def _lora_fwd(x_nd, a_dr, b_ro, scale):
    out, h_nr = _forward(x_nd, a_dr, b_ro, scale)
    return out, (x_nd, a_dr, b_ro, h_nr)


def _lora_bwd(scale, residuals, g_no):
    x_nd, a_dr, b_ro, h_nr = residuals
    g_no = g_no.astype(x_nd.dtype)
    dh_nr = jnp.matmul(g_no, b_ro.astype(g_no.dtype).T) * jnp.asarray(scale, g_no.dtype)
    d_b = jnp.matmul(h_nr.T, g_no, preferred_element_type=jnp.float32)
    d_a = jnp.matmul(x_nd.T, dh_nr, preferred_element_type=jnp.float32)
    d_x = jnp.matmul(dh_nr, a_dr.astype(dh_nr.dtype).T)
    return d_x.astype(x_nd.dtype), d_a.astype(a_dr.dtype), d_b.astype(b_ro.dtype)


lora_delta.defvjp(_lora_fwd, _lora_bwd)


class LoraProvider(qwix.LoraProvider):
    """qwix's LoRA provider; plain ``x @ W`` projections (``nnx.Linear``: one contracting axis,
    the last of x and the first of W, no batch axes, no dropout) add their update through
    ``lora_delta``. Every other dot goes through qwix unchanged. Parameters, their names,
    initialisers and NF4 bases are qwix's own."""

    def dot_general(self, lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                    out_sharding=None):
        (lhs_ca, rhs_ca), (lhs_ba, rhs_ba) = dimension_numbers
        rule, _ = self._get_current_rule_and_op_id("dot_general", only_rule=True)
        plain = (_QWIX_INTERNALS and isinstance(rule, qwix.LoraRule) and not rule.dropout
                 and len(rhs.shape) == 2 and tuple(rhs_ca) == (0,) and not lhs_ba and not rhs_ba
                 and tuple(lhs_ca) == (len(lhs.shape) - 1,))
        if not plain:
            return super().dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type,
                                       out_sharding=out_sharding)
        res = _qwix_ptq.PtqProvider.dot_general(self, lhs, rhs, dimension_numbers, precision,
                                                preferred_element_type, out_sharding=out_sharding)
        weight_name = _qwix_lora.flax_util.find_param(rhs, _qwix_ptq.WithAux)
        if weight_name is None:  # rhs is an activation, not a weight
            return res
        d_in, d_out = rhs.shape
        a_shape, a_transpose, b_shape, b_transpose = _qwix_lora._create_lora_layer_shapes(
            (0,), (), (1,), (d_in,), (), (d_out,), rule.rank)
        lora_a, lora_b = _qwix_lora._get_or_create_lora_params(
            name=weight_name, rule=rule, a_shape=a_shape, b_shape=b_shape,
            a_sharding_transpose=a_transpose, b_sharding_transpose=b_transpose)
        x_nd = lhs.reshape(-1, d_in)
        delta = lora_delta(x_nd, lora_a, lora_b, rule.alpha / rule.rank).reshape(res.shape)
        return res + delta.astype(res.dtype)
