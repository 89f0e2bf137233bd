"""`layers.matmul`: the CPU projection with a hand-written backward equals the numpy formulas
(values and both gradients), for one and two contracted axes, in float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phi4_jax.model.layers import lowering_platform, matmul


@pytest.mark.parametrize("x_shape,w_shape,k", [((2, 5, 6), (6, 7), 1),
                                               ((2, 5, 6), (6, 3, 4), 1),
                                               ((2, 5, 3, 4), (3, 4, 6), 2)])
def test_values_and_gradients_match_numpy(x_shape, w_shape, k):
    assert lowering_platform() == "cpu"
    r = np.random.default_rng(0)
    x, w = r.standard_normal(x_shape), r.standard_normal(w_shape)
    out_shape = x_shape[:len(x_shape) - k] + w_shape[k:]
    dy = r.standard_normal(out_shape)
    y, vjp = jax.vjp(lambda a, b: matmul(a, b, k), jnp.asarray(x, jnp.float32),
                     jnp.asarray(w, jnp.float32))
    dx, dw = vjp(jnp.asarray(dy, jnp.float32))
    rows, cols = int(np.prod(w_shape[:k])), int(np.prod(w_shape[k:]))
    x2, w2, dy2 = x.reshape(-1, rows), w.reshape(rows, cols), dy.reshape(-1, cols)
    np.testing.assert_allclose(np.asarray(y).reshape(-1, cols), x2 @ w2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx).reshape(-1, rows), dy2 @ w2.T, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(dw).reshape(rows, cols), x2.T @ dy2, rtol=1e-5,
                               atol=1e-5)


def test_gradient_dtypes_follow_the_inputs():
    x = jnp.ones((2, 3, 4), jnp.bfloat16)
    w = jnp.ones((4, 5), jnp.bfloat16)
    dx, dw = jax.grad(lambda a, b: matmul(a, b).astype(jnp.float32).sum(), argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    assert float(dw[0, 0]) == 6.0 and float(dx[0, 0, 0]) == 5.0
