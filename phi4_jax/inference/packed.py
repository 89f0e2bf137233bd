"""The decode loop's layer stack: unstacked, packed per-layer weights and a per-layer KV cache.

Why. The model stores its blocks stacked, every parameter [L, ...], and runs them with
`lax.scan`, which is what training, sharding and checkpoints want. Inside a loop over layers,
XLA:CPU reads a layer's weights through a dynamic-slice that materializes a copy of the slice
before each matmul: every decode step copied all block weights once before reading them again,
about doubling the memory traffic of a step that is memory-bandwidth bound. For decoding the
weights are therefore unstacked once, outside the compiled program, into separate arrays per
layer, and the decode step runs the blocks as an unrolled Python loop: each matmul reads its own
weight buffer in place.

While copying, the weights are packed for one-token steps (the same products; only float
rounding order may differ):
q, k and v become one [D, (N + 2K) H] matrix and gate and up one [D, 2F] matrix, so a layer makes
four weight matmuls instead of seven (fewer kernel launches, one pass over x), and every weight
is cast to the compute dtype once (a bf16 model reads half the bytes of its float32 parameters).
On the CPU backend (float32 or bfloat16 compute) each matrix is stored as column panels in the
compute dtype for the FFI kernel `phi4_jax.inference.kernels.small_matmul`, which streams every
weight once for all rows of the batch (XLA:CPU's GEMM reaches about half that bandwidth from two
rows on, and its bfloat16 products are slower than its float32 ones); products accumulate in
float32.
The KV cache has two parts per layer, head-major (the model's `KVCache` layout [B, S, K, H]
would cost a cache transpose per layer and step): `PromptKV` holds the prefill's keys and values
once per distinct prompt (keys [U, K, H, P], values [U, K, P, H]) and `HeadMajorKV` each row's
generated tokens (keys [B, K, H, N], values [B, K, N, H]), written in place one slot per step.
Rows are grouped by prompt (row b continues prompt b // g): n samples of one prompt share one
prefill and read its keys and values in place instead of n copies (Pivotal Token Search and the
server's `n` sample 16 or more rows per prompt; for 200-token prompts and 64 new tokens the
shared prompt part is 3/4 of every row's cache reads). Attention for the one query per row is
computed as broadcast products reduced in float32 (keys with the slots last, values with H
last, both read contiguously): XLA:CPU runs a batched dot as one small GEMM per (row, head),
2-3x slower at 64 rows.

The packed copy (`DecodeWeights`, blocks and output projection) is cached per model and reused
while the model's parameter arrays are the same objects; any parameter update gives new arrays
and re-packs on the next call. It costs a second copy of the weights, so it is only used for
models of at most `MAX_PACKED_BYTES` (SmolLM2-135M: 0.54 GB) with at most `MAX_UNROLLED_LAYERS`
layers (the unrolled step compiles in time linear in depth), and for batch buckets of at most
`max_packed_batch` rows (see `MAX_PACKED_BATCH`); everything else, including the
accelerator-sized models that decode sharded, keeps the scanned path in `decode.py`. Prefill
always uses the scan; `prompt_cache` turns its cache into the prompt part.
"""

from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.inference import kernels
from phi4_jax.model import KVCache, ModelConfig, Transformer
from phi4_jax.model.attention import NEG_INF
from phi4_jax.model.layers import rms_norm
from phi4_jax.model.rope import apply_rope

MAX_PACKED_BYTES = 2 << 30
MAX_UNROLLED_LAYERS = 64
# Batch buckets up to these sizes decode with packed weights; bigger ones keep the scan.
# Without the CPU kernel (XLA's dot: accelerators, other dtypes, no compiler), measured on a
# 2-core CPU with SmolLM2-135M (ms per step, scanned -> packed): batch 1 42 -> 25, 2 45 -> 35,
# 4 46 -> 43, 8 55 -> 61: from batch 8 on XLA:CPU's GEMM is compute-bound rather than
# bandwidth-bound, the scan's weight copies overlap with it on the other core, and the scan is
# faster. With the kernel (`phi4_jax.inference.kernels`; float32 here), whole generate calls (32 new
# tokens, s, scanned -> packed): batch 16 2.88 -> 2.10, 32 4.87 -> 3.62; 64 rows of 200-token
# prompts (4 prompts x 16 samples, 64 new tokens, a loaded host): 194 -> 31.
MAX_PACKED_BATCH = 64
MAX_PACKED_BATCH_XLA = 4


class LayerWeights(NamedTuple):
    """One block's weights in the compute dtype, packed for decoding (norm scales as stored).

    With the CPU decode kernel (`phi4_jax.inference.kernels`: float32 or bfloat16 models on the
    CPU) every matrix [K, N] below is stored as its column panels [ceil(N / 32), K, 32] instead.
    """

    attn_norm: jax.Array  # [D]
    qkv: jax.Array        # [D, (N + 2K) H]: q heads, then k heads, then v heads
    o: jax.Array          # [N H, D]
    mlp_norm: jax.Array   # [D]
    gate_up: jax.Array    # [D, 2F]: gate columns, then up columns
    down: jax.Array       # [F, D]


class DecodeWeights(NamedTuple):
    """Every block's packed weights and the output projection [D, V] in the compute dtype."""

    layers: tuple[LayerWeights, ...]
    vocab: jax.Array


class HeadMajorKV(NamedTuple):
    """One layer's generated-token cache, head-major: keys k [B, K, H, S] (slots last, so the
    query-key product reduces over H with the slots contiguous) and values v [B, K, S, H] (the
    model's `KVCache` is [B, S, K, H]); slot s holds the row's generated token s. The packed
    loop carries one per layer and writes each step's slot in place."""

    k: jax.Array
    v: jax.Array


class PromptKV(NamedTuple):
    """One layer's prompt cache, k [U, K, H, P] and v [U, K, P, H] (the layouts of
    `HeadMajorKV`): one entry per distinct prompt, read (never written) by every row that
    continues it."""

    k: jax.Array
    v: jax.Array

_PACKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def uses_kernel(config: ModelConfig) -> bool:
    """Whether packed weights are stored as panels for the CPU kernel (float32 or bfloat16
    compute on the CPU backend)."""
    return (jnp.dtype(config.compute_dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))
            and kernels.available())


def max_packed_batch(config: ModelConfig) -> int:
    """The largest batch bucket that decodes with packed weights."""
    return MAX_PACKED_BATCH if uses_kernel(config) else MAX_PACKED_BATCH_XLA


def supports(model: Transformer, batch: int) -> bool:
    """Whether `model` decodes a batch bucket of `batch` rows with packed per-layer weights."""
    cfg = model.config
    if cfg.num_layers > MAX_UNROLLED_LAYERS or batch > max_packed_batch(cfg):
        return False
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return sum(x.size for x in leaves) * cfg.compute_dtype.itemsize <= MAX_PACKED_BYTES


def decode_weights(model: Transformer) -> DecodeWeights:
    """The model's weights packed for decoding, cached while its parameters are unchanged.

    One compiled call packs all layers (a few tens of ms for SmolLM2-135M), so a training loop
    that decodes after each parameter update pays one copy of the weights per update.
    """
    leaves = tuple(jax.tree.leaves(nnx.state(model, nnx.Param)))
    hit = _PACKED.get(model)
    if hit is not None and len(hit[0]) == len(leaves) and all(
            a is b for a, b in zip(hit[0], leaves)):
        return hit[1]
    _, state = nnx.split(model, nnx.Param)
    packed = _pack(state, model.config, uses_kernel(model.config))
    _PACKED[model] = (leaves, packed)
    return packed


def panel_dtype(config: ModelConfig) -> jnp.dtype:
    """The dtype packed weight matrices are stored in: the compute dtype, or bfloat16 when the
    parameters themselves are bfloat16 and the CPU kernel reads them (a float32-compute model
    with bfloat16 weights streams half the bytes, losslessly; activations stay float32)."""
    bf16 = jnp.dtype(jnp.bfloat16)
    if config.weight_dtype == bf16 and uses_kernel(config):
        return bf16
    return config.compute_dtype


@functools.partial(jax.jit, static_argnums=(1, 2))
def _pack(state: nnx.State, cfg: ModelConfig, panels: bool) -> DecodeWeights:
    dt = cfg.compute_dtype
    matrix = ((lambda w: kernels.pack_panels(w, panel_dtype(cfg))) if panels
              else (lambda w: w.astype(dt)))
    blocks = state["blocks"]
    a, m = blocks["attn"], blocks["mlp"]
    d = cfg.embed_dim

    def value(p, i):
        return p[...][i]

    layers = []
    for i in range(cfg.num_layers):
        qkv = jnp.concatenate([value(a["q"], i).reshape(d, -1), value(a["k"], i).reshape(d, -1),
                               value(a["v"], i).reshape(d, -1)], axis=1)
        gate_up = jnp.concatenate([value(m["gate"], i), value(m["up"], i)], axis=1)
        layers.append(LayerWeights(
            attn_norm=value(blocks["attn_norm"]["scale"], i),
            qkv=matrix(qkv),
            o=matrix(value(a["o"], i).reshape(-1, d)),
            mlp_norm=value(blocks["mlp_norm"]["scale"], i),
            gate_up=matrix(gate_up),
            down=matrix(value(m["down"], i))))
    # Without panels the tied embedding [V, D] is used in place: XLA reads the transposed
    # operand directly.
    vocab = (state["embed"]["embedding"][...].T if cfg.tie_embeddings
             else state["lm_head"][...])
    return DecodeWeights(tuple(layers), matrix(vocab))


def _project(x: jax.Array, w: jax.Array, n: int, out_dtype: jnp.dtype) -> jax.Array:
    """x [..., K] @ w -> [..., n]: w is a matrix [K, n], or its panels (CPU kernel)."""
    if w.ndim == 3:
        return kernels.small_matmul(x, w, n).astype(out_dtype)
    return jnp.einsum("...D,DE->...E", x, w, preferred_element_type=out_dtype)


def logits(cfg: ModelConfig, weights: DecodeWeights, h: jax.Array) -> jax.Array:
    """float32 logits [B, T, V] of final-norm hidden states h [B, T, D] (`Transformer.logits`)."""
    return _project(h, weights.vocab, cfg.vocab_size, jnp.float32)


def prompt_cache(cache: KVCache) -> tuple[PromptKV, ...]:
    """Per-layer head-major prompt buffers from the prefill's stacked [L, U, P, K, H] cache."""
    return tuple(PromptKV(cache.k[i].transpose(0, 2, 3, 1), cache.v[i].swapaxes(1, 2))
                 for i in range(cache.k.shape[0]))


def generated_cache(cfg: ModelConfig, rows: int, slots: int) -> tuple[HeadMajorKV, ...]:
    """Zeroed per-layer buffers (k [rows, K, H, slots], v [rows, K, slots, H]) for the
    generated tokens."""
    k, h = cfg.num_kv_heads, cfg.head_dim
    zeros = lambda *shape: jnp.zeros(shape, cfg.compute_dtype)
    return tuple(HeadMajorKV(zeros(rows, k, h, slots), zeros(rows, k, slots, h))
                 for _ in range(cfg.num_layers))


def run_layers(cfg: ModelConfig, weights: DecodeWeights, x: jax.Array, prompt_lens: jax.Array,
               prompt: tuple[PromptKV, ...], generated: tuple[HeadMajorKV, ...],
               slot: jax.Array) -> tuple[jax.Array, tuple[HeadMajorKV, ...]]:
    """The block stack for one token per row, x [B, D], unrolled.

    Rows are grouped by prompt: row b continues prompt b // g (g = B / U) of the U prompts whose
    keys and values `prompt` holds (`prompt_lens` [U] tokens each). Every row's new token goes
    to generated slot `slot` (one scalar: all rows advance together) at position
    prompt_lens[b // g] + slot, and attends to its prompt and to generated slots 0..slot.
    """
    u = prompt_lens.shape[0]
    positions = jnp.repeat(prompt_lens, x.shape[0] // u) + slot
    new = []
    for w, p, g in zip(weights.layers, prompt, generated):
        x, g = _layer(cfg, w, x, positions, prompt_lens, p, g, slot)
        new.append(g)
    return x, tuple(new)


def _layer(cfg: ModelConfig, w: LayerWeights, x: jax.Array, positions: jax.Array,
           prompt_lens: jax.Array, prompt: PromptKV, gen: HeadMajorKV, slot: jax.Array
           ) -> tuple[jax.Array, HeadMajorKV]:
    """One pre-norm block (`model.block.Block` with the cached branch of
    `model.attention.Attention`) for one token per row, on packed weights."""
    b = x.shape[0]
    n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    d, f = cfg.embed_dim, cfg.mlp_dim
    u, groups = prompt.k.shape[0], n // k
    g = b // u
    normed = rms_norm(x, w.attn_norm, cfg.norm_eps, x.dtype)
    qkv = _project(normed, w.qkv, (n + 2 * k) * h, x.dtype)[:, None]  # [B, 1, (N + 2K) H]
    pos = positions[:, None]
    q = apply_rope(qkv[..., :n * h].reshape(b, 1, n, h), pos, cfg.rope_theta)[:, 0]
    new_k = apply_rope(qkv[..., n * h:(n + k) * h].reshape(b, 1, k, h), pos, cfg.rope_theta)
    new_v = qkv[..., (n + k) * h:].reshape(b, 1, k, h)
    # The new key [B, K, H, 1] and value [B, K, 1, H] go to generated slot `slot`, in place.
    zero = jnp.int32(0)
    gen = HeadMajorKV(
        jax.lax.dynamic_update_slice(gen.k, new_k[:, 0, :, :, None].astype(gen.k.dtype),
                                     (zero, zero, zero, slot)),
        jax.lax.dynamic_update_slice(gen.v, new_v.swapaxes(1, 2).astype(gen.v.dtype),
                                     (zero, zero, slot, zero)))
    # Attention as broadcast products reduced in float32, not dots (see the module docstring).
    f32 = jnp.float32
    scale = h ** -0.5
    # The prompt part: a group's g rows read their prompt's keys and values once.
    q_group = q.reshape(u, g, k, groups, h, 1).astype(f32)
    s_prompt = jnp.sum(q_group * prompt.k[:, None, :, None].astype(f32), axis=-2) * scale
    filled = jnp.arange(prompt.k.shape[3])[None, :] < prompt_lens[:, None]  # [U, P]
    s_prompt = jnp.where(filled[:, None, None, None], s_prompt, NEG_INF)  # [U, g, K, G, P]
    # The generated part: each row its own slots 0..slot.
    q_row = q.reshape(b, k, groups, h, 1).astype(f32)
    s_gen = jnp.sum(q_row * gen.k[:, :, None].astype(f32), axis=-2) * scale  # [B, K, G, S]
    s_gen = jnp.where(jnp.arange(gen.k.shape[3]) <= slot, s_gen, NEG_INF)
    # One softmax over both parts (normalized after the value products).
    peak = jnp.maximum(s_prompt.max(-1).reshape(b, k, groups), s_gen.max(-1))
    e_prompt = jnp.exp(s_prompt - peak.reshape(u, g, k, groups)[..., None])
    e_gen = jnp.exp(s_gen - peak[..., None])
    denom = e_prompt.sum(-1).reshape(b, k, groups) + e_gen.sum(-1)
    ctx = (jnp.sum(e_prompt[..., None] * prompt.v[:, None, :, None].astype(f32),
                   axis=-2).reshape(b, k, groups, h)
           + jnp.sum(e_gen[..., None] * gen.v[:, :, None].astype(f32), axis=-2))
    ctx = (ctx / denom[..., None]).astype(x.dtype).reshape(b, n * h)
    x = x + _project(ctx, w.o, d, x.dtype)
    normed = rms_norm(x, w.mlp_norm, cfg.norm_eps, x.dtype)
    gate_up = _project(normed, w.gate_up, 2 * f, x.dtype)
    gate, up = jnp.split(gate_up, 2, axis=-1)
    return x + _project(jax.nn.silu(gate) * up, w.down, d, x.dtype), gen
