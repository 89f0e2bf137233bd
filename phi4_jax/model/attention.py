"""Grouped-query attention with causal + segment masking, KV cache and a kernel switch."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from phi4_jax.model.config import ModelConfig
from phi4_jax.model.layers import cast, lowering_platform, matmul, param
from phi4_jax.model.rope import apply_rope
from phi4_jax.sharding import axes as ax

# The score of a masked-out key: finite (so a fully masked row still has a defined softmax) and
# far below any real score.
NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


class KVCache(NamedTuple):
    """Keys and values of past tokens, k and v [B, S, K, H]: slot s holds position s of a row.

    The model's one cache type. The transformer keeps every layer's in one stacked cache
    [L, B, S, K, H] (`zeros`); each block's attention sees its own layer's [B, S, K, H] slice.
    """

    k: jax.Array
    v: jax.Array

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, max_len: int) -> KVCache:
        """The stacked cache [L, B, max_len, K, H] of every layer, zeros in the compute dtype."""
        shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
        return cls(jnp.zeros(shape, config.compute_dtype), jnp.zeros(shape, config.compute_dtype))


def resolve_impl(config: ModelConfig) -> str:
    """'auto' picks splash on TPU, cuDNN on GPU (bf16/fp16 only) and XLA elsewhere."""
    if config.attention != "auto":
        return config.attention
    # The platform we lower for: the active mesh's devices (an ahead-of-time compile for TPU on
    # a CPU host), else the default backend.
    platform = lowering_platform()
    if platform == "tpu":
        return "splash"
    if platform == "gpu" and config.dtype in ("bfloat16", "float16"):
        return "cudnn"
    return "xla"


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Reference attention. q [B,T,N,H], k/v [B,S,K,H], mask [B,T,S] (True = attend)."""
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, n // kv_heads, h)
    scores = jnp.einsum("BTKGH,BSKH->BKGTS", q, k, preferred_element_type=jnp.float32)
    scores = scores * (h ** -0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, n, h).astype(q.dtype)


# Sequences longer than 2 blocks run the XLA reference one block of queries at a time, so
# neither the [B, T, S] mask nor the [B, heads, T, S] scores exist at once (16K on CPU).
_QUERY_BLOCK = 1024


def blocked_xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
                          block: int = _QUERY_BLOCK) -> jax.Array:
    """Causal + segment-masked self-attention computed `block` queries at a time.

    Each block is rematerialized in the backward pass: memory is O(block x S) per head.
    """
    b, t, n, h = q.shape
    blocks = t // block
    index = jnp.broadcast_to(jnp.arange(t), (b, t))

    def to_blocks(x):  # [B, T, ...] -> [T / block, B, block, ...]
        return jnp.swapaxes(x.reshape(b, blocks, block, *x.shape[2:]), 0, 1)

    @jax.checkpoint
    def one_block(_, xs):
        q_block, q_index, q_segments = xs
        mask = make_mask(q_index, index, q_segments, segment_ids)
        return None, xla_attention(q_block, k, v, mask)

    _, out = jax.lax.scan(one_block, None, (to_blocks(q), to_blocks(index),
                                            to_blocks(segment_ids)))
    return jnp.swapaxes(out, 0, 1).reshape(b, t, n, h)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """jax.nn.dot_product_attention (cuDNN fused kernel on GPU); same contract as XLA's."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, :, :], implementation="cudnn")


def make_mask(q_index: jax.Array, kv_index: jax.Array, q_segments: jax.Array,
              kv_segments: jax.Array) -> jax.Array:
    """[B, T, S] mask: causal by slot index within a row, and same segment only."""
    causal = kv_index[:, None, :] <= q_index[:, :, None]
    same_doc = q_segments[:, :, None] == kv_segments[:, None, :]
    return causal & same_doc


class Attention(nnx.Module):
    """GQA: q [D,N,H], k/v [D,K,H], o [N,H,D]; RoPE on q and k; no biases (as Phi-3/Phi-4)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
        std, pdt = config.init_std, config.weight_dtype
        self.config = config
        self.q = param(rngs, (d, n, h), (ax.EMBED, ax.HEADS, ax.HEAD_DIM), std=std, dtype=pdt)
        self.k = param(rngs, (d, k, h), (ax.EMBED, ax.KV_HEADS, ax.HEAD_DIM), std=std, dtype=pdt)
        self.v = param(rngs, (d, k, h), (ax.EMBED, ax.KV_HEADS, ax.HEAD_DIM), std=std, dtype=pdt)
        self.o = param(rngs, (n, h, d), (ax.HEADS, ax.HEAD_DIM, ax.EMBED), std=std, dtype=pdt)

    def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array,
                 cache: KVCache | None = None, cache_slots: jax.Array | None = None,
                 mask: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
        """x [B,T,D]; positions/segment_ids [B,T].

        Without a cache: causal + segment-masked self-attention over the T tokens, or, given
        `mask` [B,T,T] (True = attend; segment_ids unused), exactly that mask (a token tree).
        With a cache: the T new keys/values are written at `cache_slots` [B,T] (slot == position)
        and the queries attend to every slot at or before their own.
        """
        cfg = self.config
        dt = cfg.compute_dtype
        q = matmul(x, cast(self.q, dt))  # [B, T, N, H]
        k = matmul(x, cast(self.k, dt))  # [B, T, K, H]
        v = matmul(x, cast(self.v, dt))
        q = ax.constrain(apply_rope(q, positions, cfg.rope_theta),
                         (ax.BATCH, ax.SEQ, ax.HEADS, ax.HEAD_DIM))
        k = ax.constrain(apply_rope(k, positions, cfg.rope_theta),
                         (ax.BATCH, ax.SEQ, ax.KV_HEADS, ax.HEAD_DIM))
        v = ax.constrain(v, (ax.BATCH, ax.SEQ, ax.KV_HEADS, ax.HEAD_DIM))
        q = checkpoint_name(q, "query_proj")
        k = checkpoint_name(k, "key_proj")
        v = checkpoint_name(v, "value_proj")

        if cache is None and mask is not None:
            out, new_cache = xla_attention(q, k, v, mask), None
        elif cache is None:
            impl = resolve_impl(cfg)
            if impl == "splash":
                from phi4_jax.model.splash import splash_attention

                out = splash_attention(q, k, v, segment_ids)
            elif impl == "xla" and x.shape[1] > 2 * _QUERY_BLOCK and \
                    x.shape[1] % _QUERY_BLOCK == 0:
                out = blocked_xla_attention(q, k, v, segment_ids)
            else:
                index = jnp.broadcast_to(jnp.arange(x.shape[1]), segment_ids.shape)
                mask = make_mask(index, index, segment_ids, segment_ids)
                out = (cudnn_attention if impl == "cudnn" else xla_attention)(q, k, v, mask)
            new_cache = None
        else:
            rows = jnp.arange(x.shape[0])[:, None]
            new_cache = KVCache(cache.k.at[rows, cache_slots].set(k.astype(cache.k.dtype)),
                                   cache.v.at[rows, cache_slots].set(v.astype(cache.v.dtype)))
            slots = jnp.broadcast_to(jnp.arange(cache.k.shape[1]), (x.shape[0], cache.k.shape[1]))
            ones_q = jnp.ones_like(cache_slots)
            mask = make_mask(cache_slots, slots, ones_q, jnp.ones_like(slots))
            out = xla_attention(q, new_cache.k.astype(dt), new_cache.v.astype(dt), mask)

        out = ax.constrain(out, (ax.BATCH, ax.SEQ, ax.HEADS, ax.HEAD_DIM))
        out = checkpoint_name(out, "attn_context")
        y = matmul(out, cast(self.o, dt), contract=2)  # [B, T, D]
        return y, new_cache
