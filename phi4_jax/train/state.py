"""The train state: one pytree of arrays, and the logical specs that shard it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec

from phi4_jax.model import ModelConfig, abstract_model, init_model
from phi4_jax.train.objectives import Objective


class TrainState(NamedTuple):
    """Everything a step reads and writes. Checkpointed whole (with the data iterator state).

    step:              batches consumed (steps run, including skipped updates)
    params:            the model's parameters as a nested dict (param_dtype, float32 default)
    opt_state:         optax state; its update count is the number of applied updates
    rng:               uint32[2] PRNG key; step s uses fold_in(rng, s)
    nonfinite_in_row:  consecutive steps whose update was skipped for a NaN/Inf
    nonfinite_total:   all skipped updates
    frozen:            the objective's non-trained trees (DPO: reference params); often {}
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite_in_row: jax.Array
    nonfinite_total: jax.Array
    frozen: Any


def model_graph(config: ModelConfig) -> tuple[nnx.GraphDef, Any, Any]:
    """(graphdef, abstract params, logical param specs) without allocating anything."""
    graphdef, abstract = nnx.split(abstract_model(config))
    params = nnx.to_pure_dict(abstract)
    specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract))
    return graphdef, params, specs


def init_state(config: ModelConfig, tx: optax.GradientTransformation, objective: Objective,
               seed: int) -> TrainState:
    """A fresh state: parameters from `seed`, zeroed optimizer state (pure; jit it)."""
    params = nnx.to_pure_dict(nnx.state(init_model(config, seed), nnx.Param))
    return state_from_params(params, tx, objective, seed)


def state_from_params(params: Any, tx: optax.GradientTransformation, objective: Objective,
                      seed: int) -> TrainState:
    """A state at step 0 around given parameters (scratch init, or `init_from` another phase)."""
    zero = jnp.zeros((), jnp.int32)
    return TrainState(step=zero, params=params, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(seed), nonfinite_in_row=zero, nonfinite_total=zero,
                      frozen=objective.frozen(params))


def state_specs(abstract: TrainState, param_specs: Any,
                tx: optax.GradientTransformation) -> TrainState:
    """Logical PartitionSpecs for every leaf of `abstract` (a TrainState of ShapeDtypeStructs).

    Optimizer moments are sharded like their parameters; counters and hyperparameters are
    replicated; a frozen tree shaped like the parameters is sharded like them, any other
    frozen tree is replicated.
    """
    replicated = PartitionSpec()
    opt = optax.tree_map_params(tx, lambda _, spec: spec, abstract.opt_state, param_specs,
                                transform_non_params=lambda _: replicated,
                                is_leaf=lambda x: isinstance(x, PartitionSpec))
    params_shape = jax.tree.map(lambda x: (x.shape, x.dtype), abstract.params)

    def frozen_specs(tree: Any) -> Any:
        if jax.tree.map(lambda x: (x.shape, x.dtype), tree) == params_shape:
            return param_specs
        return jax.tree.map(lambda _: replicated, tree)

    return TrainState(step=replicated, params=param_specs, opt_state=opt, rng=replicated,
                      nonfinite_in_row=replicated, nonfinite_total=replicated,
                      frozen={name: frozen_specs(t) for name, t in abstract.frozen.items()})
