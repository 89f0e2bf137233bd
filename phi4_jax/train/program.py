"""The compiled program of a run: shardings derived once, init and step jitted once.

    eval_shape(init) -> logical specs -> NamedShardings
        -> jax.jit(init, out_shardings)  and  jax.jit(train_step, in/out shardings, donate)

`build` validates every parameter dimension and the batch against the mesh before anything
compiles. The same Program serves the local loop and ahead-of-time compilation for a TPU
topology (`program.step.lower(*program.abstract_inputs())`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from phi4_jax.model import ModelConfig
from phi4_jax.sharding import axes as ax
from phi4_jax.sharding.rules import Rules, activate
from phi4_jax.train import state as state_lib
from phi4_jax.train.objectives import Objective
from phi4_jax.train.steps import train_step


def _under_rules(fn, rules: Rules, *args, **kwargs):
    """`fn` bound to args that runs with the rules installed, so activation constraints apply
    whenever jit traces it (the jitted function keeps fn's name for profiles and dumps)."""

    @functools.wraps(fn)
    def traced(*more, **more_kwargs):
        with activate(rules):
            return fn(*args, *more, **kwargs, **more_kwargs)

    return traced


@dataclass(frozen=True)
class Program:
    rules: Rules
    model_config: ModelConfig
    objective: Objective
    tx: optax.GradientTransformation
    graphdef: nnx.GraphDef
    abstract_state: state_lib.TrainState  # ShapeDtypeStructs
    state_shardings: state_lib.TrainState  # NamedShardings
    batch_shapes: dict[str, jax.ShapeDtypeStruct]  # global shapes (the objective's spec)
    batch_shardings: dict[str, NamedSharding]
    init: Any  # () -> TrainState
    from_params: Any  # params -> TrainState (init_from another phase)
    step: Any  # (TrainState, batch) -> (TrainState, metrics); donates the state

    @property
    def mesh(self) -> jax.sharding.Mesh:
        return self.rules.mesh

    @property
    def param_count(self) -> int:
        return sum(math.prod(x.shape) for x in jax.tree.leaves(self.abstract_state.params))

    def abstract_inputs(self) -> tuple[Any, Any]:
        """(state, batch) ShapeDtypeStructs carrying shardings, for `step.lower`."""
        def with_sharding(x, s):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
        return (jax.tree.map(with_sharding, self.abstract_state, self.state_shardings),
                jax.tree.map(with_sharding, self.batch_shapes, self.batch_shardings))

    def put_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's rows of the global batch -> global jax.Arrays with the batch sharding."""
        missing = set(self.batch_shapes) - set(local)
        if missing:
            raise KeyError(f"batch lacks {sorted(missing)} (objective "
                           f"{self.objective.name!r} reads {sorted(self.batch_shapes)})")
        return {k: jax.make_array_from_process_local_data(
                    self.batch_shardings[k], np.asarray(local[k], self.batch_shapes[k].dtype),
                    self.batch_shapes[k].shape)
                for k in self.batch_shapes}


def validate_batch(rules: Rules, *, global_batch: int, micro_batches: int, seq_len: int,
                   model_config: ModelConfig) -> None:
    """Rejects a batch the data axes cannot split, naming the config fields."""
    if global_batch <= 0 or micro_batches <= 0 or seq_len <= 0:
        raise ValueError(f"train.global_batch={global_batch}, train.micro_batches="
                         f"{micro_batches} and data.seq_len={seq_len} must be positive")
    if global_batch % micro_batches:
        raise ValueError(f"train.global_batch={global_batch} is not divisible by "
                         f"train.micro_batches={micro_batches}")
    if seq_len > model_config.max_seq_len:
        raise ValueError(f"data.seq_len={seq_len} exceeds model.max_seq_len="
                         f"{model_config.max_seq_len}")
    rows = global_batch // micro_batches
    (batch_axes, seq_axes) = rules.mesh_axes(("batch", "seq"))
    ways = rules.shards(("batch", "seq"))
    if rows % ways[0]:
        sizes = {a: rules.mesh.shape[a] for a in batch_axes}
        raise ValueError(
            f"train.global_batch={global_batch} / train.micro_batches={micro_batches} = {rows} "
            f"rows per micro-batch do not split over the batch mesh axes {sizes} ({ways[0]} "
            f"ways) under rules {rules.name!r}")
    if seq_len % ways[1]:
        raise ValueError(f"data.seq_len={seq_len} does not split over mesh axes {seq_axes}")
    if global_batch % jax.process_count():
        raise ValueError(f"train.global_batch={global_batch} does not split over "
                         f"{jax.process_count()} hosts")


def batch_shapes_of(objective: Objective, *, global_batch: int, seq_len: int
                    ) -> dict[str, jax.ShapeDtypeStruct]:
    """Global shapes of the objective's batch arrays: 'batch' -> global_batch, 'seq' ->
    seq_len."""
    sizes = {ax.BATCH: global_batch, ax.SEQ: seq_len}
    out = {}
    for key, field in objective.batch_spec.items():
        unknown = [a for a in field.axes if a not in sizes]
        if unknown:
            raise ValueError(f"objective {objective.name!r}: batch key {key!r} has axes "
                             f"{field.axes}; batch arrays have axes {sorted(sizes)}")
        out[key] = jax.ShapeDtypeStruct(tuple(sizes[a] for a in field.axes),
                                        np.dtype(field.dtype))
    return out


def build(model_config: ModelConfig, rules: Rules, objective: Objective,
          tx: optax.GradientTransformation, *, seed: int, global_batch: int, seq_len: int,
          micro_batches: int = 1) -> Program:
    """Validates, derives shardings once and jits init / from_params / step (no compile yet)."""
    validate_batch(rules, global_batch=global_batch, micro_batches=micro_batches,
                   seq_len=seq_len, model_config=model_config)
    graphdef, abstract_params, param_specs = state_lib.model_graph(model_config)
    rules.validate(abstract_params, param_specs)
    init_fn = _under_rules(state_lib.init_state, rules, model_config, tx, objective, seed)
    abstract_state = jax.eval_shape(init_fn)
    shardings = rules.shardings(state_lib.state_specs(abstract_state, param_specs, tx))
    batch_shapes = batch_shapes_of(objective, global_batch=global_batch, seq_len=seq_len)
    batch_shardings = {k: rules.sharding(axes) for k, axes in objective.batch_axes.items()}
    replicated = NamedSharding(rules.mesh, PartitionSpec())
    step_fn = _under_rules(train_step, rules, graphdef=graphdef, objective=objective, tx=tx,
                           micro_batches=micro_batches)
    from_params = _under_rules(state_lib.state_from_params, rules, tx=tx, objective=objective,
                               seed=seed)
    return Program(
        rules=rules, model_config=model_config, objective=objective, tx=tx, graphdef=graphdef,
        abstract_state=abstract_state, state_shardings=shardings, batch_shapes=batch_shapes,
        batch_shardings=batch_shardings,
        init=jax.jit(init_fn, out_shardings=shardings),
        from_params=jax.jit(from_params, in_shardings=(shardings.params,),
                            out_shardings=shardings),
        step=jax.jit(step_fn, in_shardings=(shardings, batch_shardings),
                     out_shardings=(shardings, replicated), donate_argnums=0))

