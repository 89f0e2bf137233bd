"""Basic layers: parameters with logical axes, RMSNorm (fp32), embedding, projections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
        return rms_norm(x, self.scale[...], self.eps, self.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float, dtype: jnp.dtype) -> jax.Array:
    """x / rms(x) * scale over the last axis, computed in float32, returned in `dtype`."""
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(var + eps)
    return (y * scale.astype(jnp.float32)).astype(dtype)


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


def dot(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """x [..., K1..Kk] . w [K1..Kk, N...] -> [..., N...] as one dot_general."""
    dims = ((tuple(range(x.ndim - k, x.ndim)), tuple(range(k))), ((), ()))
    return jax.lax.dot_general(x, w, dims)


class Projection(Protocol):
    """How the model's projections are computed and differentiated (see `register_projection`).

    matmul(x, w, k): `dot(x, w, k)`'s value, differentiable (it may carry its own VJP).
    vocab_grads(h, w, g): (dh, dw) of h [B, T, D] @ w [D, V] for a cotangent g [B, T, V]
        already in h's dtype (the backward pass of `project_to_vocab`).
    """

    def matmul(self, x: jax.Array, w: jax.Array, k: int) -> jax.Array: ...

    def vocab_grads(self, h: jax.Array, w: jax.Array, g: jax.Array
                    ) -> tuple[jax.Array, jax.Array]: ...


class AutodiffProjection:
    """The default: one dot_general, differentiated by JAX's autodiff."""

    def matmul(self, x: jax.Array, w: jax.Array, k: int) -> jax.Array:
        return dot(x, w, k)

    def vocab_grads(self, h: jax.Array, w: jax.Array, g: jax.Array
                    ) -> tuple[jax.Array, jax.Array]:
        _, vjp = jax.vjp(lambda h, w: jnp.einsum("BTD,DV->BTV", h, w), h, w)
        return vjp(g)


AUTODIFF = AutodiffProjection()
_PROJECTIONS: dict[str, Projection] = {}


def register_projection(platform: str, impl: Projection | None) -> None:
    """Makes `impl` compute every projection traced for `platform` (None: back to autodiff).

    The model itself knows no platform-specific projection; a module outside it registers one
    (phi4_jax.train.cpu_projection registers a hand-written CPU backward when imported). The
    choice is made at trace time from `lowering_platform()`, i.e. the active partitioner's
    devices, so an ahead-of-time TPU compile on a CPU host keeps autodiff.
    """
    if impl is None:
        _PROJECTIONS.pop(platform, None)
    else:
        _PROJECTIONS[platform] = impl


def projection() -> Projection:
    """The projection implementation for the platform being lowered for."""
    return _PROJECTIONS.get(lowering_platform(), AUTODIFF)


def matmul(x: jax.Array, w: jax.Array, contract: int = 1) -> jax.Array:
    """A projection: x [..., K1..Kk] . w [K1..Kk, N...] -> [..., N...] (k = `contract`).

    The same values everywhere; how it is differentiated is the registered `projection()`'s
    choice (default: autodiff of one dot_general).
    """
    return projection().matmul(x, w, contract)


VOCAB_WEIGHT_AXES: ax.LogicalAxes = (ax.EMBED, ax.VOCAB)


@jax.custom_vjp
def project_to_vocab(h: jax.Array, w: jax.Array) -> jax.Array:
    """float32 logits [B, T, V'] = h [B, T, D] @ w [D, V'], accumulated in float32.

    The backward pass casts the logits' cotangent to the compute dtype first, so the weight
    gradient is a compute-dtype [D, V] matrix (accumulated in float32 inside the matmul) rather
    than a float32 one: for Phi-4 that is 1 GB instead of 2 GB per device before FSDP's
    reduce-scatter. In float32 compute the two are identical. The gradients themselves come from
    the registered `projection()`. The weight gradient is constrained to the weight's logical
    axes (embed, vocab), so a sharded weight gets a reduce-scatter.
    """
    return jnp.einsum("BTD,DV->BTV", h, w, preferred_element_type=jnp.float32)


def _project_fwd(h, w):
    return project_to_vocab(h, w), (h, w)


def _project_bwd(residuals, g):
    h, w = residuals
    dh, dw = projection().vocab_grads(h, w, g.astype(h.dtype))
    return dh, ax.constrain(dw, VOCAB_WEIGHT_AXES)


project_to_vocab.defvjp(_project_fwd, _project_bwd)
