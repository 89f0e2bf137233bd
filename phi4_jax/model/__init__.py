"""Phi-4-family model: config, Flax NNX modules, parameter counting, decoding."""

from __future__ import annotations

import math

import jax
from flax import nnx

from phi4_jax.model.config import PRESETS, ModelConfig, from_hf_config, preset, to_hf_config
from phi4_jax.model.transformer import KVCache, Transformer

presets = PRESETS


def init_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """Builds a Transformer with freshly initialized parameters (one compiled program)."""
    return nnx.jit(lambda: Transformer(config, rngs=nnx.Rngs(seed)))()


def abstract_model(config: ModelConfig) -> Transformer:
    """The model with ShapeDtypeStruct leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def count_params(config: ModelConfig | str) -> int:
    """Number of parameters, computed with eval_shape (no allocation)."""
    if isinstance(config, str):
        config = preset(config)
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))


__all__ = ["KVCache", "ModelConfig", "Transformer", "abstract_model", "count_params",
           "from_hf_config", "init_model", "preset", "presets", "to_hf_config"]
