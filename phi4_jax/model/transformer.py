"""The decoder: embed -> scanned blocks -> final RMSNorm -> logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.model.attention import KVCache
from phi4_jax.model.block import Block, remat_policy
from phi4_jax.model.config import ModelConfig
from phi4_jax.model.layers import (
    VOCAB_WEIGHT_AXES,
    Embed,
    RMSNorm,
    cast,
    param,
    project_to_vocab,
)
from phi4_jax.sharding import axes as ax


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Positions that restart at 0 wherever the segment id changes along a row."""
    t = jnp.arange(segment_ids.shape[1])
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1)
    start_index = jax.lax.cummax(jnp.where(starts, t, 0), axis=1)
    return (t - start_index).astype(jnp.int32)


class Transformer(nnx.Module):
    """Phi-4-family decoder. Calling it on token ids [B, T] returns float32 logits [B, T, V].

    `positions` and `segment_ids` come from the batch: packed documents carry distinct segment
    ids (0 marks padding) and never attend to each other. Without positions, they restart at each
    segment boundary; without segment ids, every row is one document.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        dt, pdt = config.compute_dtype, config.weight_dtype
        self.embed = Embed(config.vocab_size, config.embed_dim, std=config.init_std, dtype=dt,
                           param_dtype=pdt, rngs=rngs)

        @nnx.split_rngs(splits=config.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: ax.LAYERS})
        def make_blocks(layer_rngs: nnx.Rngs) -> Block:
            return Block(config, rngs=layer_rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = RMSNorm(config.embed_dim, eps=config.norm_eps, dtype=dt,
                                  param_dtype=pdt, rngs=rngs)
        if not config.tie_embeddings:
            self.lm_head = param(rngs, (config.embed_dim, config.vocab_size),
                                 (ax.EMBED, ax.VOCAB), std=config.init_std, dtype=pdt)

    # -- full-sequence forward (training, scoring) -------------------------------------------
    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 segment_ids: jax.Array | None = None) -> jax.Array:
        return self.logits(self.hidden(tokens, positions, segment_ids))

    def hidden(self, tokens: jax.Array, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, *, mask: jax.Array | None = None
               ) -> jax.Array:
        """Final-norm hidden states [B, T, D] (the loss may project them in chunks).

        `mask` [B, T, T] (True = attend), with `positions`, replaces the causal + segment mask:
        a token tree packed in a row attends to its ancestors (`inference.scoring.trie_logprobs`).
        """
        tokens = jnp.asarray(tokens, jnp.int32)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        if positions is None:
            positions = positions_from_segments(segment_ids)
        x = ax.constrain(self.embed(tokens), (ax.BATCH, ax.SEQ, ax.EMBED))
        x, _ = self._run_blocks(x, positions, segment_ids, None, None, mask)
        return self.final_norm(x)

    def logits(self, h: jax.Array) -> jax.Array:
        """Projects hidden states [B, T, D] to float32 logits [B, T, V]."""
        out = project_to_vocab(h, self.output_weight())
        return ax.constrain(out, (ax.BATCH, ax.SEQ, ax.VOCAB))

    def output_weight(self) -> jax.Array:
        """The vocabulary projection [D, V] in the compute dtype (the embedding's transpose when
        tied). Losses that chunk the vocabulary slice it; `logits` applies it whole."""
        if self.config.tie_embeddings:
            w = cast(self.embed.embedding, self.config.compute_dtype).T
        else:
            w = cast(self.lm_head, self.config.compute_dtype)
        return ax.constrain(w, VOCAB_WEIGHT_AXES)

    # -- cached forward (prompt pass, then one step per new token) ----------------------------
    def forward_cached(self, tokens: jax.Array, cache: KVCache, slots: jax.Array
                       ) -> tuple[jax.Array, KVCache]:
        """Runs T new tokens per row written at cache `slots` [B, T] (slot == position).

        `cache` is the stacked [L, B, S, K, H] cache (`KVCache.zeros`); each query attends to
        every slot at or before its own. Returns float32 logits [B, T, V] and the updated cache.
        """
        h, cache = self.hidden_cached(tokens, cache, slots)
        return self.logits(h), cache

    def hidden_cached(self, tokens: jax.Array, cache: KVCache, slots: jax.Array
                      ) -> tuple[jax.Array, KVCache]:
        """`forward_cached` stopping at the final norm: hidden states [B, T, D] and the cache
        (a prompt pass needs logits at one position per row only)."""
        x = self.embed(jnp.asarray(tokens, jnp.int32))
        x, cache = self._run_blocks(x, slots, jnp.ones_like(slots), cache, slots)
        return self.final_norm(x), cache

    # -- the layer stack ----------------------------------------------------------------------
    def _run_blocks(self, x, positions, segment_ids, cache: KVCache | None, slots, mask=None):
        cfg = self.config
        graphdef, stacked = nnx.split(self.blocks)

        def body(carry, xs):
            h, kv = carry
            layer_state, layer = xs
            block = nnx.merge(graphdef, layer_state)
            if kv is None:
                h, _ = block(h, positions, segment_ids, mask=mask)
                return (h, None), None
            view = _LayerView(kv, layer)
            h, new = block(h, positions, segment_ids, view.read(), slots)
            return (h, view.write(new, slots)), None

        policy = remat_policy(cfg.remat) if cache is None else None
        if policy is not None:
            body = jax.checkpoint(body, policy=policy, prevent_cse=not cfg.scan_layers)
        layers = jnp.arange(cfg.num_layers)
        if cfg.scan_layers:
            (x, cache), _ = jax.lax.scan(body, (x, cache), (stacked, layers))
        else:
            for i in range(cfg.num_layers):
                layer_state = jax.tree.map(lambda a, i=i: a[i], stacked)
                (x, cache), _ = body((x, cache), (layer_state, i))
        return x, cache


class _LayerView:
    """Reads one layer's slice of the stacked cache; writes back only the new slots."""

    def __init__(self, cache: KVCache, layer):
        self.cache, self.layer = cache, layer

    def read(self) -> KVCache:
        return KVCache(self.cache.k[self.layer], self.cache.v[self.layer])

    def write(self, new: KVCache, slots: jax.Array) -> KVCache:
        rows = jnp.arange(slots.shape[0])[:, None]
        take = lambda a: a[rows, slots]  # [B, T, K, H]: just the entries written this call
        return KVCache(self.cache.k.at[self.layer, rows, slots].set(take(new.k)),
                       self.cache.v.at[self.layer, rows, slots].set(take(new.v)))
