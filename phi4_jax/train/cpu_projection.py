"""A hand-written backward pass for the model's projections on CPU (train-step speed).

Why. XLA:CPU lowers the weight gradient x^T dy of an autodiff'd einsum by transposing the
*activation gradient* ([tokens, 2560] for an MLP, [tokens, vocab] for the LM head) and fuses that
transpose into the elementwise backward that produces it, which then writes with a stride of a
full row: ~20% of a CPU train step (docs/training.md). Here the smaller activation is
transposed instead, by itself (an optimization barrier keeps XLA from folding it back into the
dot), and the weight gradient is one canonical [K, M] @ [M, N] matmul. The values are those of
autodiff's backward; only the layouts XLA:CPU is handed differ.

Where. The model (`phi4_jax.model.layers`) computes every projection through a pluggable
`Projection`, default autodiff; this module registers `CPU_PROJECTION` for the "cpu" lowering
platform when it is imported. It lives in `phi4_jax.train` because only a backward pass needs
it (inference never differentiates), and the train step (`phi4_jax.train.steps`, the one place
that takes gradients) imports it. The choice is made per trace from the active partitioner's
devices (else the default backend): TPU and GPU programs, including an ahead-of-time TPU
compile on a CPU host, keep autodiff's einsum, whose layouts their compilers choose well.
"""

from __future__ import annotations

import functools
import math

import jax

from phi4_jax.model import layers


def grads(x: jax.Array, w: jax.Array, dy: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(dx, dw) of `layers.dot(x, w, k)` for the cotangent dy, the weight gradient as one plain
    [K, M] @ [M, N] matmul over an explicitly transposed activation."""
    n_out = w.ndim - k
    dims = ((tuple(range(dy.ndim - n_out, dy.ndim)), tuple(range(k, w.ndim))), ((), ()))
    dx = jax.lax.dot_general(dy, w, dims).astype(x.dtype)
    rows = math.prod(w.shape[:k])
    x_t = jax.lax.optimization_barrier(x.reshape(-1, rows).T)
    dw = (x_t @ dy.reshape(-1, math.prod(w.shape[k:])).astype(x.dtype)).reshape(w.shape)
    return dx, dw.astype(w.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """`layers.dot(x, w, k)` whose backward pass is `grads`."""
    return layers.dot(x, w, k)


def _matmul_fwd(x, w, k):
    return layers.dot(x, w, k), (x, w)


def _matmul_bwd(k, residuals, dy):
    x, w = residuals
    return grads(x, w, dy, k)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class CPUProjection:
    """`layers.Projection` with the hand-written backward (registered for the CPU platform)."""

    def matmul(self, x: jax.Array, w: jax.Array, k: int) -> jax.Array:
        return matmul(x, w, k)

    def vocab_grads(self, h: jax.Array, w: jax.Array, g: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
        return grads(h, w, g, 1)


CPU_PROJECTION = CPUProjection()
layers.register_projection("cpu", CPU_PROJECTION)
