"""The logical axis vocabulary: the only names the model may use for sharding.

Every parameter and key activation in `phi4_jax.model` is annotated with a tuple of these names,
one per dimension (or `None` for a dimension that is never sharded). `phi4_jax.sharding.rules`
maps them to mesh axes; the model never names a mesh axis.

Shape letters used in einsum strings across the model (one glossary, used everywhere):

    B batch        T query positions   S key positions   D embed
    N query heads  K kv heads          G groups (N / K)  H head dim
    F mlp          V vocab             L layers
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Protocol

import jax

BATCH = "batch"
SEQ = "seq"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
HEAD_DIM = "head_dim"
MLP = "mlp"
VOCAB = "vocab"
LAYERS = "layers"

VOCABULARY: tuple[str, ...] = (BATCH, SEQ, EMBED, HEADS, KV_HEADS, HEAD_DIM, MLP, VOCAB, LAYERS)

LogicalAxes = tuple[str | None, ...]

class Partitioner(Protocol):
    """What the model may ask of the active sharding rules (see phi4_jax.sharding.rules)."""

    mesh: jax.sharding.Mesh

    def spec(self, axes: LogicalAxes) -> jax.sharding.PartitionSpec: ...

    def constrain(self, x: jax.Array, axes: LogicalAxes,
                  priority: Sequence[int] | None = None) -> jax.Array: ...


# `None` (the default) means no sharding: single-device runs, tests and tracing without a mesh.
# `phi4_jax.sharding.rules.activate` installs a Partitioner for the duration of a `with` block.
_ACTIVE: contextvars.ContextVar[Partitioner | None] = contextvars.ContextVar(
    "phi4_jax_partitioner", default=None)


def check(axes: Sequence[str | None]) -> LogicalAxes:
    """Returns `axes` as a tuple after checking every name belongs to the vocabulary."""
    for name in axes:
        if name is not None and name not in VOCABULARY:
            raise ValueError(f"unknown logical axis {name!r}; the vocabulary is {VOCABULARY}")
    return tuple(axes)


def active() -> Partitioner | None:
    """The Partitioner installed by `rules.activate`, or None outside any."""
    return _ACTIVE.get()


def constrain(x: jax.Array, axes: LogicalAxes, priority: Sequence[int] | None = None
              ) -> jax.Array:
    """Annotates an activation with logical axes; a no-op unless a Partitioner is active.

    A mesh axis serves one dimension per array; dimensions claim theirs left to right, or in
    `priority` order (dimension indices) when given.
    """
    if x.ndim != len(axes):
        raise ValueError(f"activation of rank {x.ndim} annotated with {len(axes)} axes {axes}")
    partitioner = _ACTIVE.get()
    if partitioner is None:
        return x
    return partitioner.constrain(x, axes) if priority is None else \
        partitioner.constrain(x, axes, priority)


@contextlib.contextmanager
def use_partitioner(partitioner: Partitioner | None) -> Iterator[None]:
    """Installs `partitioner` for the `with` block (called by rules.activate)."""
    token = _ACTIVE.set(partitioner)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
