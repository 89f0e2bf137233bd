"""Objectives: what a train step minimizes. Pretraining, mid-training and SFT are next-token
prediction (SFT differs only in its data's loss mask); DPO (`phi4_jax/train/dpo.py`) is the
same protocol with preference-pair batches, same loop.

An objective provides:

    batch_axes   the batch arrays it reads and their logical axes (shards the input)
    weight(b)    the normalizer of a global batch (loss tokens, or pairs for DPO)
    loss(graphdef, params, frozen, batch, rng) -> (sum, stats)
                 the sum over the (micro-)batch of the quantity to minimize, and sums of the
                 quantities to report; the step divides both by the global batch's weight
    frozen(params)
                 non-trained state, a dict of parameter-shaped trees (DPO: {'reference':
                 params}); stored in the TrainState, sharded like the parameters
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.model import merge_for_compute
from phi4_jax.sharding import axes as ax
from phi4_jax.train.losses import next_token_loss

Batch = Mapping[str, jax.Array]
TOKEN_AXES = (ax.BATCH, ax.SEQ)


class Objective(Protocol):
    name: str
    batch_axes: Mapping[str, ax.LogicalAxes]

    def weight(self, batch: Batch) -> jax.Array: ...

    def loss(self, graphdef: nnx.GraphDef, params: Any, frozen: Any, batch: Batch,
             rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def frozen(self, params: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class NextToken:
    """Masked next-token cross-entropy plus optional z-loss (pretraining, mid-training, SFT).

    Reports `loss` (mean cross-entropy per loss token) and `z_loss` (mean lse^2, unweighted).
    """

    z_loss: float = 0.0
    vocab_chunks: int = 1
    name: ClassVar[str] = "next_token"
    batch_axes: ClassVar[Mapping[str, ax.LogicalAxes]] = MappingProxyType(
        dict.fromkeys(("tokens", "targets", "positions", "segment_ids", "loss_mask"),
                      TOKEN_AXES))

    def weight(self, batch: Batch) -> jax.Array:
        return jnp.sum(batch["loss_mask"].astype(jnp.float32))

    def loss(self, graphdef, params, frozen, batch, rng):
        del frozen, rng  # no reference model, no dropout
        model = merge_for_compute(graphdef, params)
        hidden = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
        sums = next_token_loss(hidden, model.output_weight(), batch["targets"],
                               batch["loss_mask"], self.vocab_chunks)
        total = sums.xent + self.z_loss * sums.z if self.z_loss else sums.xent
        return total, {"loss": sums.xent, "z_loss": sums.z}

    def frozen(self, params):
        del params
        return {}


def from_config(config: Any) -> Objective:
    """The objective named by `config.objective`, parameterized by `config.train`."""
    if config.objective == "next_token":
        return NextToken(z_loss=float(config.train.z_loss),
                         vocab_chunks=int(config.train.loss_vocab_chunks))
    if config.objective == "dpo":
        from phi4_jax.train import dpo  # noqa: PLC0415 (dpo.py builds on this module's protocol)

        return dpo.from_config(config)
    raise ValueError(f"objective={config.objective!r}; implemented: ['next_token', 'dpo']")
