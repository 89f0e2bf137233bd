"""Next-token loss sums against numpy; vocabulary chunks equal one projection, without [B,T,V]."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from phi4_jax.train import losses

B, T, D, V = 2, 16, 8, 32


def numpy_sums(logits, targets, mask):
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    target = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return ((lse - target) * mask).sum(), (lse**2 * mask).sum()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(B, T, D)).astype(np.float32),
            rng.normal(size=(D, V)).astype(np.float32),
            rng.integers(0, V, (B, T)).astype(np.int32),
            (rng.random((B, T)) > 0.3).astype(np.float32))


@pytest.mark.parametrize("chunks", [1, 4])
def test_loss_matches_numpy(data, chunks):
    h, w, targets, mask = data
    got = losses.next_token_loss(jnp.asarray(h), jnp.asarray(w), jnp.asarray(targets),
                                 jnp.asarray(mask), chunks)
    want = numpy_sums((h @ w).astype(np.float64), targets, mask)
    np.testing.assert_allclose([float(got.xent), float(got.z)], want, rtol=1e-5)


@pytest.mark.parametrize("chunks", [2, 8])
def test_vocab_chunks_equal_one_projection_with_gradients(data, chunks):
    h, w, targets, mask = data

    def total(h, w, chunks):
        out = losses.next_token_loss(h, w, targets, mask, chunks)
        return out.xent + 1e-2 * out.z

    whole, whole_grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)),
                                 static_argnums=2)(h, w, 1)
    part, part_grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)),
                               static_argnums=2)(h, w, chunks)
    np.testing.assert_allclose(part, whole, rtol=1e-6)
    for a, b in zip(part_grads, whole_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_backward_never_holds_full_logits(data):
    h, w, targets, mask = data
    grad = jax.grad(lambda w: losses.next_token_loss(h, w, targets, mask, 4).xent)
    jaxpr = jax.make_jaxpr(grad)(w)
    shapes = set()

    def visit(jpr):
        for eqn in jpr.eqns:
            shapes.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    assert (B, T, V // 4) in shapes
    assert not any(len(s) >= 2 and s[-1] == V and T in s for s in shapes), shapes


def test_chunks_must_divide_the_vocabulary(data):
    h, w, targets, mask = data
    with pytest.raises(ValueError, match="train.loss_vocab_chunks=5"):
        losses.next_token_loss(h, w, targets, mask, 5)
