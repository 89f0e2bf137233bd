"""Pre-norm decoder block and the named remat policies applied around it."""

from __future__ import annotations

import jax
from flax import nnx

from phi4_jax.model.attention import Attention, KVCache
from phi4_jax.model.config import ModelConfig
from phi4_jax.model.layers import RMSNorm
from phi4_jax.model.mlp import MLP
from phi4_jax.sharding import axes as ax

_ACT = (ax.BATCH, ax.SEQ, ax.EMBED)


def remat_policy(name: str):
    """Maps a remat name to a jax.checkpoint policy (None: do not wrap in jax.checkpoint).

    none: keep every activation (fastest, most memory). full: keep only each block's input.
    dots: keep all matmul outputs. dots_no_batch: keep weight matmul outputs (not attention
    scores). save_attn_out: keep q/k/v projections and the attention context, recompute the MLP.
    offload_dots: like dots_no_batch but parked in host memory (TPU/GPU).
    """
    cp = jax.checkpoint_policies
    return {
        "none": None,
        "full": cp.nothing_saveable,
        "dots": cp.dots_saveable,
        "dots_no_batch": cp.dots_with_no_batch_dims_saveable,
        "save_attn_out": cp.save_only_these_names("query_proj", "key_proj", "value_proj",
                                                  "attn_context"),
        "offload_dots": cp.offload_dot_with_no_batch_dims("device", "pinned_host"),
    }[name]


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        kw = dict(eps=config.norm_eps, dtype=config.compute_dtype,
                  param_dtype=config.weight_dtype, rngs=rngs)
        self.attn_norm = RMSNorm(config.embed_dim, **kw)
        self.attn = Attention(config, rngs=rngs)
        self.mlp_norm = RMSNorm(config.embed_dim, **kw)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                 cache: KVCache | None = None, cache_slots: jax.Array | None = None,
                 mask: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        h, cache = self.attn(self.attn_norm(x), positions, segment_ids, cache, cache_slots, mask)
        x = ax.constrain(x + h, _ACT)
        x = ax.constrain(x + self.mlp(self.mlp_norm(x)), _ACT)
        return x, cache
