"""Phi-4-family model: config, Flax NNX modules, parameter counting.

Platform-free: decoding lives in `phi4_jax.inference`, checkpoint formats in `phi4_jax.convert`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.model.attention import KVCache
from phi4_jax.model.config import PRESETS, ModelConfig, preset
from phi4_jax.model.transformer import Transformer
from phi4_jax.sharding import axes as ax

presets = PRESETS


def init_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """Builds a Transformer with freshly initialized parameters (one compiled program)."""
    return nnx.jit(lambda: Transformer(config, rngs=nnx.Rngs(seed)))()


def abstract_model(config: ModelConfig) -> Transformer:
    """The model with ShapeDtypeStruct leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def merge_for_compute(graphdef: nnx.GraphDef, params) -> Transformer:
    """`nnx.merge` for a training step: weight matrices are cast to the compute dtype up front.

    Mixed precision as the training step uses it: the float32 parameters stay the optimizer's
    master copy; the forward and backward passes see one bf16 copy, pinned to the parameters'
    own sharding, so FSDP gathers bf16 weights and reduce-scatters bf16 gradients: half the bytes
    of float32 on the wire and in memory. RMSNorm scales (vectors) stay float32.
    """
    model = nnx.merge(graphdef, params)
    dtype = model.config.compute_dtype
    if dtype == model.config.weight_dtype:
        return model
    for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value()
        if jnp.issubdtype(value.dtype, jnp.floating) and value.ndim >= 2:
            logical = tuple(var.get_metadata().get("out_sharding") or ())
            value = value.astype(dtype)
            var.set_value(ax.constrain(value, logical) if len(logical) == value.ndim else value)
    return model


def count_params(config: ModelConfig | str) -> int:
    """Number of parameters, computed with eval_shape (no allocation)."""
    if isinstance(config, str):
        config = preset(config)
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


__all__ = ["KVCache", "ModelConfig", "Transformer", "abstract_model", "count_params",
           "init_model", "merge_for_compute", "preset", "presets"]
