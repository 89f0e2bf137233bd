"""Pallas splash attention (TPU) behind the same contract as `attention.xla_attention`.

Causal + segment masking come from the kernel (`CausalMask`, `SegmentIds`); grouped-query heads
are handled natively by the kernel. Under an active sharding Partitioner the kernel runs inside
`shard_map` over the mesh axes the rules give to 'batch' and 'heads'; when 'heads' is split but
'kv_heads' is replicated (e.g. Phi-4's 10 KV heads with tensor=4 or 8), each shard picks the KV
heads its query heads read.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
from jax.sharding import PartitionSpec as P

from phi4_jax.sharding import axes as ax


def block_sizes(seq_len: int) -> sk.BlockSizes:
    """512-row tiles; the backward pass runs separate dq and dk/dv kernels.

    The fused backward kernel writes one partial dq per KV block and sums them afterwards
    ([T / block_kv, N, T, H]: 8x the size of dq at 4K, 0.3 GB for Phi-4), which the separate
    dq kernel avoids.
    """
    b = min(512, seq_len)
    return sk.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                         block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b,
                         block_kv_dq=b, use_fused_bwd_kernel=False)


@functools.lru_cache(maxsize=32)
def _kernel(num_heads: int, seq_len: int, interpret: bool):
    mask = sm.MultiHeadMask([sm.CausalMask((seq_len, seq_len))] * num_heads)
    return sk.make_splash_mha(mask, block_sizes=block_sizes(seq_len), head_shards=1,
                              q_seq_shards=1, interpret=interpret)


def _local(q, k, v, segment_ids, *, interpret: bool):
    """q [B,N,T,H] (pre-scaled), k/v [B,K,S,H], segment_ids [B,T] -> [B,N,T,H]."""
    kernel = _kernel(q.shape[1], q.shape[2], interpret)
    per_row = lambda q, k, v, s: kernel(q, k, v, segment_ids=sk.SegmentIds(q=s, kv=s))
    return jax.vmap(per_row)(q, k, v, segment_ids)


def _single(entry) -> str | None:
    if entry is None:
        return None
    if isinstance(entry, tuple):
        if len(entry) != 1:
            raise ValueError(f"splash attention: heads sharded over several mesh axes {entry}")
        return entry[0]
    return entry


def _targets_tpu(partitioner) -> bool:
    """Whether we lower for TPU: the active mesh's devices (AOT on a CPU host) or the backend."""
    if partitioner is not None:
        return partitioner.mesh.devices.flat[0].platform == "tpu"
    return jax.default_backend() == "tpu"


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array,
                     *, interpret: bool | None = None) -> jax.Array:
    """q [B,T,N,H], k/v [B,S,K,H], segment_ids [B,T] -> [B,T,N,H] (causal, same segment).

    `interpret` (default: when not lowering for TPU) runs the Pallas kernel in interpreter mode,
    which is how CPU tests check its numerics. Mosaic rejects bf16 matmuls under a process-wide
    `jax_default_matmul_precision="highest"`: lower TPU programs with the default precision.
    """
    n, h, kv = q.shape[2], q.shape[3], k.shape[2]
    q = (q * jnp.asarray(h ** -0.5, q.dtype)).transpose(0, 2, 1, 3)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    segment_ids = segment_ids.astype(jnp.int32)
    partitioner = ax.active()
    if interpret is None:
        interpret = not _targets_tpu(partitioner)
    if partitioner is None:
        out = _local(q, k, v, segment_ids, interpret=interpret)
        return out.transpose(0, 2, 1, 3)

    batch = partitioner.spec((ax.BATCH,))[0]
    if partitioner.spec((ax.SEQ,))[0] is not None:
        raise ValueError("splash attention needs 'seq' unsharded (no context parallelism)")
    heads_axis = _single(partitioner.spec((ax.HEADS,))[0])
    kv_axis = _single(partitioner.spec((ax.KV_HEADS,))[0])
    mesh = partitioner.mesh
    group = n // kv

    def body(q, k, v, s):
        if heads_axis is not None and kv_axis is None:
            # This shard holds query heads [i*nl, (i+1)*nl); give each its KV head.
            nl = q.shape[1]
            first = jax.lax.axis_index(heads_axis) * nl
            if nl % group == 0:
                k = jax.lax.dynamic_slice_in_dim(k, first // group, nl // group, axis=1)
                v = jax.lax.dynamic_slice_in_dim(v, first // group, nl // group, axis=1)
            else:
                idx = (first + jnp.arange(nl)) // group
                k, v = jnp.take(k, idx, axis=1), jnp.take(v, idx, axis=1)
        return _local(q, k, v, s, interpret=interpret)

    qspec = P(batch, heads_axis, None, None)
    kvspec = P(batch, kv_axis, None, None)
    out = jax.shard_map(body, mesh=mesh, in_specs=(qspec, kvspec, kvspec, P(batch, None)),
                        out_specs=qspec, check_vma=False)(q, k, v, segment_ids)
    return out.transpose(0, 2, 1, 3)


def supported(seq_len: int) -> bool:
    """The kernel tiles the sequence in blocks of min(512, T) rows of 128 lanes."""
    return seq_len % 128 == 0 and seq_len % min(512, seq_len) == 0


__all__ = ["block_sizes", "splash_attention", "supported"]
