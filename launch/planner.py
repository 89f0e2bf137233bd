"""Batch planner: a mesh and gradient accumulation that realize a global batch exactly.

It reads an experiment config (`model`, `train.global_batch`, `train.loss_vocab_chunks`,
`data.seq_len`) and writes `mesh` / `train` back, so it lives with the launchers (launch.tpu
--plan_batch, bench/aot.py), not in phi4_jax.

    plan = plan_batch(config, "v5p-768")      # Phi-4: 5760 sequences of 4096 tokens
    plan.apply(config)                         # sets mesh.ici / mesh.dcn / rules, per_device_batch
    print(plan.describe())

Search, for a slice (or `num_slices` slices joined over DCN on `data`):

  tensor   1, then 2, 4, 8 (Megatron over heads / mlp / vocab; only when pure FSDP cannot split
           the batch): must divide the query heads, the MLP width and the vocabulary; KV heads
           are replicated when it does not divide them (Phi-4: 10 KV heads).
  fsdp     the largest divisor of the chips per slice / tensor that divides the embed width
           (every weight is sharded along it) -- parameters and optimizer state spread widest;
  data     the rest of the slice, times the slices (replicas: gradient all-reduce only);
  rows     global_batch / (data x fsdp) sequences per device per step, which must be whole;
  per-device batch  the largest divisor of `rows` whose estimated memory fits in
           `hbm_fraction` of HBM; micro-batches = rows / per-device batch.

The memory estimate (documented in `estimate_bytes`) only ranks candidates; the ahead-of-time
compile (`launch.tpu --dry_run --plan_batch`) is the proof.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from phi4_jax.model import ModelConfig, count_params
from phi4_jax.model.config import from_experiment
from phi4_jax.sharding import topology as topo_lib

GIB = 2**30


class BatchPlanError(ValueError):
    """The topology cannot realize the global batch exactly; the message says why."""


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    tpu: str
    num_slices: int
    data: int  # total, ICI x DCN
    fsdp: int
    tensor: int
    global_batch: int
    per_device_batch: int
    micro_batches: int
    estimated_bytes: int
    hbm_bytes: int
    replicate_kv_heads: bool = False  # tensor does not divide the KV heads

    def apply(self, config: Any) -> Any:
        """Writes the plan into an experiment config (in place; also returned)."""
        per_slice_data = self.data // self.num_slices
        config.mesh.ici = {"data": per_slice_data, "fsdp": self.fsdp, "tensor": self.tensor}
        config.mesh.dcn = {"data": self.num_slices, "fsdp": 1, "tensor": 1}
        if self.tensor > 1:
            config.mesh.rules = "fsdp_tp"
            if self.replicate_kv_heads:
                config.mesh.rule_overrides.kv_heads = ""
        config.train.per_device_batch = self.per_device_batch
        config.train.micro_batches = self.micro_batches
        return config

    def describe(self) -> str:
        slices = f"{self.num_slices} x " if self.num_slices > 1 else ""
        return (f"{slices}{self.tpu}: mesh data={self.data} x fsdp={self.fsdp} x tensor="
                f"{self.tensor}; global batch {self.global_batch} = {self.micro_batches} "
                f"micro-batch(es) x {self.data * self.fsdp} devices x {self.per_device_batch} "
                f"sequence(s); estimated {self.estimated_bytes / GIB:.1f} GiB of "
                f"{self.hbm_bytes / GIB:.0f} GiB HBM per chip")


def estimate_bytes(model: ModelConfig, *, fsdp: int, tensor: int, rows: int, seq_len: int,
                   accumulate: bool, loss_vocab_chunks: int = 8) -> int:
    """Per-chip peak of a train step (full remat, scanned layers, bf16 compute, splash attention).

    Sharded over fsdp x tensor: params + AdamW moments (12 B/param, the step's arguments), the
    bf16 compute copy (2 B/param) and, when accumulating, 12 B/param more (the float32
    accumulator, one micro-batch's float32 gradients and their reduce-scatter). One layer's
    gathered bf16 weights and gradients. Per row and token: the remat stash (one [D] bf16
    activation per layer) and one layer's recomputed activations, (15 D + 6 F / tensor) bf16.
    Per row: the loss's vocabulary block, about 5 float32 [T, V / (chunks x tensor)] buffers
    (`train.loss_vocab_chunks`: 8 in the base config, scaled with the sequence from there).
    And 10 bytes x T^2, independent of rows (fitted: it appears at 16K; not yet traced to an op).

    Fitted to libtpu compiles of Phi-4 on v5p (`bench/aot.py` and 5 more layouts, 2026-11-26):
    estimate / compiled peak from 0.96 (16K, 5 rows, tensor 2, accumulating: 62.2 vs 64.6 GiB)
    to 1.12 (4K, 15 rows, v5p-768: 61.8 vs 55.2 GiB). The previous estimate was up to 24% under
    at 16K. It ranks candidates; the ahead-of-time compile is the proof.
    """
    params = count_params(model)
    shards = fsdp * tensor
    state = params * (12 + 2 + (12 if accumulate else 0)) // shards
    layer = (params - 2 * model.vocab_size * model.embed_dim) // model.num_layers
    working = 2 * 2 * layer // tensor
    d, f = model.embed_dim, model.mlp_dim
    per_token = model.num_layers * d * 2 + (15 * d + 6 * f // tensor) * 2
    loss = 5 * seq_len * (model.vocab_size // loss_vocab_chunks // tensor) * 4
    return (state + working + rows * (seq_len * per_token + loss)
            + 10 * seq_len * seq_len)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def plan_batch(config: Any, tpu: str, num_slices: int = 1, *,
               hbm_fraction: float = 0.85) -> BatchPlan:
    """The plan for `config` (its model, global batch and sequence length) on the slice(s)."""
    model = from_experiment(config.model)
    global_batch, seq_len = int(config.train.global_batch), int(config.data.seq_len)
    topo = topo_lib.describe(tpu, num_slices)
    budget = int(hbm_fraction * topo.hbm_bytes)
    chunks = int(config.train.loss_vocab_chunks)
    tried = []
    for tensor in (1, 2, 4, 8):
        if topo.chips % tensor or any(x % tensor for x in (model.num_heads, model.mlp_dim,
                                                           model.vocab_size)):
            continue
        fsdp_options = [f for f in _divisors(topo.chips // tensor) if model.embed_dim % f == 0]
        for fsdp in sorted(fsdp_options, reverse=True):
            data = topo.chips // tensor // fsdp * num_slices
            ways = data * fsdp
            if global_batch % ways:
                tried.append(f"tensor={tensor} fsdp={fsdp} data={data}: {global_batch} "
                             f"sequences do not split over {ways} devices")
                continue
            rows = global_batch // ways
            for per_device in sorted(_divisors(rows), reverse=True):
                micro = rows // per_device
                need = estimate_bytes(model, fsdp=fsdp, tensor=tensor, rows=per_device,
                                      seq_len=seq_len, accumulate=micro > 1,
                                      loss_vocab_chunks=chunks)
                if need <= budget:
                    return BatchPlan(tpu, num_slices, data, fsdp, tensor, global_batch,
                                     per_device, micro, need, topo.hbm_bytes,
                                     replicate_kv_heads=model.num_kv_heads % tensor != 0)
            tried.append(f"tensor={tensor} fsdp={fsdp} data={data}: even 1 sequence per "
                         f"device needs ~{need / GIB:.0f} GiB > {budget / GIB:.0f} GiB")
    factors = _factor(global_batch)
    raise BatchPlanError(
        f"{tpu} x {num_slices} ({topo.chips * num_slices} chips) cannot realize a global batch "
        f"of exactly {global_batch} ({factors}) sequences of {seq_len}: every mesh whose data x "
        f"fsdp ways divide the batch was too small or too large. Tried: " + "; ".join(tried[:6])
        + (f" (+{len(tried) - 6} more)" if len(tried) > 6 else "")
        + ". Choose a slice whose chip count (or chips / tensor) shares more factors with the "
          "batch.")


def _factor(n: int) -> str:
    out, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    counts = {p: out.count(p) for p in sorted(set(out))}
    return " x ".join(f"{p}^{c}" if c > 1 else str(p) for p, c in counts.items())


__all__ = ["BatchPlan", "BatchPlanError", "estimate_bytes", "plan_batch"]
