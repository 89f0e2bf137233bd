"""Objectives: what a train step minimizes, what it reads, and the registry that names them.

Pretraining, mid-training and SFT are `next_token` (SFT differs only in its data's loss mask);
DPO (`phi4_jax/train/dpo/`) is another registered objective. The loop, the program and the
step know only this protocol (`Objective`, whose defaults an objective may keep):

    batch_spec   the batch arrays it reads: key -> BatchField(dtype, logical axes); an axis
                 'batch' has train.global_batch entries, 'seq' data.seq_len (shapes the input,
                 shards it, splits it into micro-batches)
    weight(b)    the normalizer of a global batch (loss tokens, or pairs for DPO)
    loss(graphdef, params, frozen, batch, rng) -> (sum, stats)
                 the sum over the (micro-)batch of the quantity to minimize, and sums of the
                 quantities to report; the step divides both by the global batch's weight
    frozen(params)
                 non-trained state, a dict of trees built from the start parameters inside the
                 jitted init (DPO: {'reference': params}); checkpointed in the TrainState, a
                 parameter-shaped tree sharded like the parameters, anything else replicated
    load_frozen(program, state)
                 on a fresh start (not a checkpoint restore): fill the frozen state from
                 outside, e.g. another run's parameters (DPO: train.reference_from)
    inputs(run, program, workdir, host=, host_count=)
                 this host's batch iterator for the run (numpy dicts of batch_spec's keys, rows
                 this host's share; `get_state()` / `set_state()` with JSON-able state)

Registry: `register(name, factory, section=None)` makes `objective=name` mean
`factory(run_config)`; `section`, a dataclass, types the experiment's config section of the
same name (`dpo` for DPO). Built-in objectives register on import (`_BUILTINS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi4_jax.model import merge_for_compute
from phi4_jax.sharding import axes as ax
from phi4_jax.train import inputs as inputs_lib
from phi4_jax.train.losses import next_token_loss

if TYPE_CHECKING:
    from phi4_jax.train.config import RunConfig
    from phi4_jax.train.program import Program

Batch = Mapping[str, jax.Array]
TOKEN_AXES = (ax.BATCH, ax.SEQ)


@dataclass(frozen=True)
class BatchField:
    """One batch array: its dtype and logical axes ('batch' and / or 'seq')."""

    dtype: Any
    axes: ax.LogicalAxes = TOKEN_AXES


# The next-token keys every packed-sequence objective reads (the data engine's contract).
TOKEN_FIELDS: Mapping[str, BatchField] = MappingProxyType({
    **dict.fromkeys(inputs_lib.BATCH_KEYS[:4], BatchField(np.int32)),
    "loss_mask": BatchField(np.float32)})


class Objective:
    """The protocol (module docstring), with the defaults of an objective without frozen state.

    Subclasses set `name` and `batch_spec` and implement `weight`, `loss` and `inputs`.
    """

    name: ClassVar[str]
    batch_spec: Mapping[str, BatchField]

    @property
    def batch_axes(self) -> dict[str, ax.LogicalAxes]:
        return {k: f.axes for k, f in self.batch_spec.items()}

    def weight(self, batch: Batch) -> jax.Array:
        raise NotImplementedError

    def loss(self, graphdef: nnx.GraphDef, params: Any, frozen: Any, batch: Batch,
             rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def frozen(self, params: Any) -> dict[str, Any]:
        del params
        return {}

    def load_frozen(self, program: Program, state: Any) -> Any:
        del program
        return state

    def inputs(self, run: RunConfig, program: Program, workdir: str, *, host: int,
               host_count: int) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class NextToken(Objective):
    """Masked next-token cross-entropy plus optional z-loss (pretraining, mid-training, SFT).

    Reports `loss` (mean cross-entropy per loss token) and `z_loss` (mean lse^2, unweighted).
    """

    z_loss: float = 0.0
    vocab_chunks: int = 1
    name: ClassVar[str] = "next_token"
    batch_spec: ClassVar[Mapping[str, BatchField]] = TOKEN_FIELDS

    def weight(self, batch):
        return jnp.sum(batch["loss_mask"].astype(jnp.float32))

    def loss(self, graphdef, params, frozen, batch, rng):
        del frozen, rng  # no reference model, no dropout
        model = merge_for_compute(graphdef, params)
        hidden = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
        sums = next_token_loss(hidden, model.output_weight(), batch["targets"],
                               batch["loss_mask"], self.vocab_chunks)
        total = sums.xent + self.z_loss * sums.z if self.z_loss else sums.xent
        return total, {"loss": sums.xent, "z_loss": sums.z}

    def inputs(self, run, program, workdir, *, host, host_count):
        del workdir
        return inputs_lib.build_iterator(
            run.data, global_batch=run.train.global_batch, steps=run.train.steps,
            vocab_size=program.model_config.vocab_size, host=host, host_count=host_count,
            heldout_tokens=run.eval.heldout_rows * run.data.seq_len)


def next_token(run: RunConfig) -> NextToken:
    """`next_token` of a run: train.z_loss, train.loss_vocab_chunks; data.source checked."""
    if run.data.source not in inputs_lib.SOURCES:
        raise ValueError(f"data.source={run.data.source!r}: objective 'next_token' reads one of "
                         f"{list(inputs_lib.SOURCES)}")
    return NextToken(z_loss=run.train.z_loss, vocab_chunks=run.train.loss_vocab_chunks)


@dataclass(frozen=True)
class Registration:
    factory: Callable[[RunConfig], Objective]
    section: type | None  # the dataclass of the config section named like the objective


_REGISTRY: dict[str, Registration] = {"next_token": Registration(next_token, None)}
_BUILTINS = ("phi4_jax.train.dpo.objective",)  # modules that register objectives on import


def register(name: str, factory: Callable[[RunConfig], Objective], *,
             section: type | None = None) -> None:
    """`objective=name` builds `factory(run_config)`; `section` types the `name` section."""
    old = _REGISTRY.get(name)
    if old is not None and old.factory is not factory:
        raise ValueError(f"objective {name!r} is already registered (by {old.factory!r})")
    _REGISTRY[name] = Registration(factory, section)


def _registry() -> dict[str, Registration]:
    for module in _BUILTINS:
        importlib.import_module(module)
    return _REGISTRY


def names() -> list[str]:
    return sorted(_registry())


def sections() -> dict[str, type]:
    """Config section key -> its dataclass, for every registered objective that has one."""
    return {name: r.section for name, r in sorted(_registry().items()) if r.section}


def from_config(run: RunConfig) -> Objective:
    """The objective `run.objective` names, built by its registered factory."""
    registry = _registry()
    if run.objective not in registry:
        raise ValueError(f"objective={run.objective!r}; registered: {sorted(registry)}")
    return registry[run.objective].factory(run)
