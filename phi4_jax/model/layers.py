"""Basic layers: parameters with logical axes, RMSNorm (fp32), embedding."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.sharding import axes as ax


def param(rngs: nnx.Rngs, shape: Sequence[int], logical: Sequence[str | None], *, std: float | None,
          dtype: jnp.dtype, fan_in_axes: Sequence[int] = (0,)) -> nnx.Param:
    """A parameter carrying logical axis names (never mesh axes).

    `std=None` means ones (norm scales); otherwise a truncated normal. A `std` of 0 asks for the
    fan-in default 1/sqrt(fan_in) computed over `fan_in_axes`.
    """
    logical = ax.check(logical)
    if len(logical) != len(shape):
        raise ValueError(f"shape {tuple(shape)} annotated with {len(logical)} axes {logical}")
    if std is None:
        value = jnp.ones(shape, dtype)
    else:
        if std == 0:
            fan_in = 1
            for a in fan_in_axes:
                fan_in *= shape[a]
            std = fan_in ** -0.5
        value = std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)
        value = value.astype(dtype)
    # Logical names live in `out_sharding`; sharding is applied once, by jit, in the train loop,
    # so the variable must not try to shard itself on creation.
    return nnx.Param(value, out_sharding=logical, eager_sharding=False)


def cast(p: nnx.Param, dtype: jnp.dtype) -> jax.Array:
    """The parameter's value in `dtype`, still sharded like the parameter.

    The constraint pins the cast before any FSDP all-gather: weights travel and sit gathered in
    the compute dtype (half the bytes of float32), one layer at a time. Inside the layer scan the
    value has lost its leading 'layers' axis; its logical axes follow.
    """
    value = p[...]
    logical = tuple(p.get_metadata().get("out_sharding") or ())
    if len(logical) == value.ndim + 1 and logical[0] == ax.LAYERS:
        logical = logical[1:]
    value = value.astype(dtype)
    return ax.constrain(value, logical) if len(logical) == value.ndim else value


class RMSNorm(nnx.Module):
    """Root-mean-square norm computed in float32, output in the compute dtype."""

    def __init__(self, dim: int, *, eps: float, dtype: jnp.dtype, param_dtype: jnp.dtype,
                 rngs: nnx.Rngs):
        self.eps = eps
        self.dtype = dtype
        self.scale = param(rngs, (dim,), (ax.EMBED,), std=None, dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


class Embed(nnx.Module):
    """Token embedding [V, D] (its transpose is the output projection when tied)."""

    def __init__(self, vocab: int, dim: int, *, std: float, dtype: jnp.dtype,
                 param_dtype: jnp.dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.embedding = param(rngs, (vocab, dim), (ax.VOCAB, ax.EMBED), std=std,
                               dtype=param_dtype)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        table = cast(self.embedding, self.dtype)
        x = jnp.take(table, tokens, axis=0)  # [B, T, D]
        # Look the tokens up in the local slice of the embed dimension first (embed claims its
        # mesh axes before batch, which keeps only what is left, e.g. data replicas): the
        # table's gradient is then a scatter into that slice, never a full [V, D] partial sum
        # per device. The caller moves the result to the batch-sharded layout.
        return ax.constrain(x, (ax.BATCH, ax.SEQ, ax.EMBED), priority=(2, 0, 1))



def lowering_platform() -> str:
    """The platform being compiled for: the active mesh's devices (e.g. TPU devices in an
    ahead-of-time compile on a CPU host), else the default backend."""
    partitioner = ax.active()
    if partitioner is not None:
        return partitioner.mesh.devices.flat[0].platform
    return jax.default_backend()


def _contract(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """x [..., K1..Kk] . w [K1..Kk, N...] -> [..., N...]."""
    dims = ((tuple(range(x.ndim - k, x.ndim)), tuple(range(k))), ((), ()))
    return jax.lax.dot_general(x, w, dims)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_cpu(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    return _contract(x, w, k)


def _matmul_cpu_fwd(x, w, k):
    return _contract(x, w, k), (x, w)


def _matmul_cpu_bwd(k, residuals, dy):
    x, w = residuals
    return _matmul_grads(x, w, dy, k)


def _matmul_grads(x: jax.Array, w: jax.Array, dy: jax.Array, k: int):
    """(dx, dw) of x . w, with the weight gradient as one plain [K, M] @ [M, N] matmul over an
    explicitly transposed activation (see `matmul`)."""
    n_out = w.ndim - k
    dims = ((tuple(range(dy.ndim - n_out, dy.ndim)), tuple(range(k, w.ndim))), ((), ()))
    dx = jax.lax.dot_general(dy, w, dims).astype(x.dtype)
    rows = math.prod(w.shape[:k])
    x_t = jax.lax.optimization_barrier(x.reshape(-1, rows).T)
    dw = (x_t @ dy.reshape(-1, math.prod(w.shape[k:])).astype(x.dtype)).reshape(w.shape)
    return dx, dw.astype(w.dtype)


_matmul_cpu.defvjp(_matmul_cpu_fwd, _matmul_cpu_bwd)


def matmul(x: jax.Array, w: jax.Array, contract: int = 1) -> jax.Array:
    """A projection: x [..., K1..Kk] . w [K1..Kk, N...] -> [..., N...] (k = `contract`).

    Same values everywhere; on CPU the backward pass is written by hand. XLA:CPU lowers the
    weight gradient x^T dy of an autodiff'd einsum by transposing the *activation gradient*
    ([tokens, 2560] for an MLP, [tokens, vocab] for the LM head) and fuses that transpose into
    the elementwise backward that produces it, which then writes with a stride of a full row:
    ~20% of a CPU train step (docs/training.md). Here the smaller activation is transposed
    instead, by itself (the optimization barrier keeps XLA from folding it back into the dot),
    and the gradient is one canonical matmul. TPU and GPU programs keep autodiff's einsum, whose
    layouts their compilers choose well.
    """
    if lowering_platform() == "cpu":
        return _matmul_cpu(x, w, contract)
    return _contract(x, w, contract)


VOCAB_WEIGHT_AXES: ax.LogicalAxes = (ax.EMBED, ax.VOCAB)


@jax.custom_vjp
def project_to_vocab(h: jax.Array, w: jax.Array) -> jax.Array:
    """float32 logits [B, T, V'] = h [B, T, D] @ w [D, V'], accumulated in float32.

    The backward pass casts the logits' cotangent to the compute dtype first, so the weight
    gradient is a compute-dtype [D, V] matrix (accumulated in float32 inside the matmul) rather
    than a float32 one: for Phi-4 that is 1 GB instead of 2 GB per device before FSDP's
    reduce-scatter. In float32 compute the two are identical. The weight gradient is constrained
    to the weight's logical axes (embed, vocab), so a sharded weight gets a reduce-scatter.
    """
    return jnp.einsum("BTD,DV->BTV", h, w, preferred_element_type=jnp.float32)


def _project_fwd(h, w):
    return project_to_vocab(h, w), (h, w)


def _project_bwd(residuals, g):
    h, w = residuals
    g = g.astype(h.dtype)
    if lowering_platform() == "cpu":  # the hand-written weight gradient of `matmul`
        dh, dw = _matmul_grads(h, w, g, 1)
    else:
        _, vjp = jax.vjp(lambda h, w: jnp.einsum("BTD,DV->BTV", h, w), h, w)
        dh, dw = vjp(g)
    return dh, ax.constrain(dw, VOCAB_WEIGHT_AXES)


project_to_vocab.defvjp(_project_fwd, _project_bwd)
