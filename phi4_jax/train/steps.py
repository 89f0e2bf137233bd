"""The pure train step: (state, batch) -> (state, metrics), for any objective.

Bind the static arguments with functools.partial and jit once (see `program.py`):

    step = functools.partial(train_step, graphdef=g, objective=o, tx=tx, micro_batches=m)
    jax.jit(step, in_shardings=..., out_shardings=..., donate_argnums=0)

Gradient accumulation: the global batch [B, ...] is viewed as M micro-batches of B/M rows
(micro-batch j holds rows j, j+M, j+2M, ..., so each one keeps the batch sharding without any
data movement). Every micro-batch's loss sum is divided by the weight of the whole global batch
before differentiation, so the accumulated gradient is the full-batch gradient.

Non-finite guard: if the loss or the gradient norm is NaN/Inf the update is skipped (params and
optimizer state unchanged, data still consumed) and counted; the loop aborts after K in a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from phi4_jax.sharding import axes as ax
from phi4_jax.train import cpu_projection  # noqa: F401  (registers the CPU backward)
from phi4_jax.train.objectives import Batch, Objective
from phi4_jax.train.optimizer import applied_learning_rate
from phi4_jax.train.state import TrainState


def split_micro_batches(batch: Batch, micro_batches: int,
                        batch_axes: Mapping[str, ax.LogicalAxes]) -> dict[str, jax.Array]:
    """[B, ...] -> [M, B/M, ...] with micro-batch j = rows j, j+M, ... (no resharding)."""
    out = {}
    for key, x in batch.items():
        rows = x.shape[0] // micro_batches
        x = jnp.swapaxes(x.reshape(rows, micro_batches, *x.shape[1:]), 0, 1)
        out[key] = ax.constrain(x, (None, *batch_axes[key]))
    return out


def loss_and_grads(params: Any, batch: Batch, *, graphdef: nnx.GraphDef, objective: Objective,
                   frozen: Any, rng: jax.Array, micro_batches: int
                   ) -> tuple[jax.Array, dict[str, jax.Array], Any]:
    """Objective and stats divided by the global batch weight, and the gradient of the former."""
    batch = {k: batch[k] for k in objective.batch_axes}
    weight = jnp.maximum(objective.weight(batch), 1.0)

    def scaled_loss(p, micro, key):
        total, stats = objective.loss(graphdef, p, frozen, micro, key)
        return total / weight, jax.tree.map(lambda s: s / weight, stats)

    grad_fn = jax.value_and_grad(scaled_loss, has_aux=True)
    if micro_batches == 1:
        (loss, stats), grads = grad_fn(params, batch, rng)
        return loss, stats, grads

    micros = split_micro_batches(batch, micro_batches, objective.batch_axes)

    def body(carry, xs):
        index, micro = xs
        (loss, stats), grads = grad_fn(params, micro, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (loss, stats, grads)), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        grad_fn, params, jax.tree.map(lambda x: x[0], micros), rng))
    (loss, stats), grads = zeros
    (loss, stats, grads), _ = jax.lax.scan(
        body, (loss, stats, grads), (jnp.arange(micro_batches), micros))
    return loss, stats, grads


def train_step(state: TrainState, batch: Batch, *, graphdef: nnx.GraphDef, objective: Objective,
               tx: optax.GradientTransformation, micro_batches: int = 1
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch; returns the new state and scalar metrics."""
    rng = jax.random.fold_in(state.rng, state.step)
    loss, stats, grads = loss_and_grads(state.params, batch, graphdef=graphdef,
                                        objective=objective, frozen=state.frozen, rng=rng,
                                        micro_batches=micro_batches)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # A conditional, not a select: the skipped branch touches nothing, and the taken one
    # updates the donated parameters and moments in place (a select would keep old and new
    # copies of both alive at once).
    params, opt_state = jax.lax.cond(finite, update, lambda p, o: (p, o), state.params,
                                     state.opt_state)
    skipped = jnp.logical_not(finite).astype(jnp.int32)
    new_state = state._replace(
        step=state.step + 1, params=params, opt_state=opt_state,
        nonfinite_in_row=jnp.where(finite, 0, state.nonfinite_in_row + 1),
        nonfinite_total=state.nonfinite_total + skipped)
    metrics = {**stats, "objective": loss, "grad_norm": grad_norm,
               "learning_rate": applied_learning_rate(opt_state),
               "param_norm": optax.tree.norm(params),
               "loss_tokens": objective.weight(batch), "skipped": skipped,
               "nonfinite_in_row": new_state.nonfinite_in_row}
    return new_state, metrics
