"""SwiGLU feed-forward: down(silu(x @ gate) * (x @ up))."""

from __future__ import annotations

import jax
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from phi4_jax.model.config import ModelConfig
from phi4_jax.model.layers import cast, matmul, param
from phi4_jax.sharding import axes as ax


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, f = config.embed_dim, config.mlp_dim
        std, pdt = config.init_std, config.weight_dtype
        self.dtype = config.compute_dtype
        self.gate = param(rngs, (d, f), (ax.EMBED, ax.MLP), std=std, dtype=pdt)
        self.up = param(rngs, (d, f), (ax.EMBED, ax.MLP), std=std, dtype=pdt)
        self.down = param(rngs, (f, d), (ax.MLP, ax.EMBED), std=std, dtype=pdt)

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        gate = matmul(x, cast(self.gate, dt))
        up = matmul(x, cast(self.up, dt))
        hidden = jax.nn.silu(gate) * up
        hidden = ax.constrain(hidden, (ax.BATCH, ax.SEQ, ax.MLP))
        hidden = checkpoint_name(hidden, "mlp_hidden")
        return matmul(hidden, cast(self.down, dt))
