"""`train.cpu_projection`: the CPU projection with a hand-written backward equals the numpy
formulas (values and both gradients) for one and two contracted axes, in float32 and bfloat16,
and is what `layers.matmul` / `project_to_vocab` use on CPU only."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phi4_jax.model import layers
from phi4_jax.sharding import axes as ax
from phi4_jax.train import cpu_projection


@pytest.mark.parametrize("x_shape,w_shape,k", [((2, 5, 6), (6, 7), 1),
                                               ((2, 5, 6), (6, 3, 4), 1),
                                               ((2, 5, 3, 4), (3, 4, 6), 2)])
def test_values_and_gradients_match_numpy(x_shape, w_shape, k):
    assert layers.lowering_platform() == "cpu"
    assert layers.projection() is cpu_projection.CPU_PROJECTION
    r = np.random.default_rng(0)
    x, w = r.standard_normal(x_shape), r.standard_normal(w_shape)
    out_shape = x_shape[:len(x_shape) - k] + w_shape[k:]
    dy = r.standard_normal(out_shape)
    y, vjp = jax.vjp(lambda a, b: layers.matmul(a, b, k), jnp.asarray(x, jnp.float32),
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
    dx, dw = jax.grad(lambda a, b: layers.matmul(a, b).astype(jnp.float32).sum(),
                      argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    assert float(dw[0, 0]) == 6.0 and float(dx[0, 0, 0]) == 5.0


def _grads(fn, *args):
    return jax.grad(lambda *a: fn(*a).astype(jnp.float32).sum() ** 2, argnums=(0, 1))(*args)


def test_cpu_and_autodiff_gradients_agree_and_only_cpu_uses_the_barrier():
    r = np.random.default_rng(1)
    h = jnp.asarray(r.standard_normal((2, 7, 16)), jnp.float32)
    w = jnp.asarray(r.standard_normal((16, 40)), jnp.float32)
    for fn in (layers.matmul, layers.project_to_vocab):
        cpu = _grads(fn, h, w)
        jaxpr = str(jax.make_jaxpr(lambda h, w, fn=fn: _grads(fn, h, w))(h, w))
        assert "optimization_barrier" in jaxpr
        layers.register_projection("cpu", None)
        try:
            auto = _grads(fn, h, w)
            jaxpr = str(jax.make_jaxpr(lambda h, w, fn=fn: _grads(fn, h, w))(h, w))
            assert "optimization_barrier" not in jaxpr
        finally:
            layers.register_projection("cpu", cpu_projection.CPU_PROJECTION)
        for a, b in zip(cpu, auto):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


def test_programs_lowered_for_tpu_keep_autodiff():
    # An ahead-of-time TPU compile on this CPU host: the active partitioner's devices decide.
    fake_mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="tpu")]))
    partitioner = types.SimpleNamespace(mesh=fake_mesh)
    with ax.use_partitioner(partitioner):
        assert layers.lowering_platform() == "tpu"
        assert layers.projection() is layers.AUTODIFF
    assert layers.projection() is cpu_projection.CPU_PROJECTION
