"""Model FLOPs per token (for MFU) and the peak FLOP/s they are measured against.

Training FLOPs per token, counting multiply-adds as 2 FLOPs and the backward pass as twice the
forward (so x3 overall):

    6 * P_matmul + 6 * L * N * H * T

P_matmul = L * (2*D*N*H + 2*D*K*H + 3*D*F) + D*V: every weight that multiplies activations (q, o,
k, v, the SwiGLU gate/up/down, the LM head); the embedding lookup and norm scales do no matmul.
The second term is attention proper: per layer and token, QK^T and PV cost 2 * 2 * N*H FLOPs per
attended key, and a causal token attends to T/2 keys on average. (PaLM's 6N + 12*L*H*Q*T counts
the full T x T square; we count the causal half, the work a causal kernel must do.) Remat
recomputation is not model FLOPs: MFU does not reward it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from phi4_jax.model import ModelConfig

# Dense bf16 peak FLOP/s per chip, by jax `device_kind` (prefix match, longest first).
PEAK_FLOPS: dict[str, float] = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "TPU7x": 2307e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def matmul_params(config: ModelConfig) -> int:
    d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
    per_layer = 2 * d * n * h + 2 * d * k * h + 3 * d * config.mlp_dim
    return config.num_layers * per_layer + d * config.vocab_size


def flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training (forward + backward) model FLOPs per token at sequence length `seq_len`."""
    attention = 6 * config.num_layers * config.num_heads * config.head_dim * seq_len
    return 6.0 * matmul_params(config) + attention


def device_peak_flops(device: jax.Device) -> float | None:
    """Table peak for accelerators; None for CPUs and unknown kinds (measure those)."""
    kind = device.device_kind
    for prefix in sorted(PEAK_FLOPS, key=len, reverse=True):
        if kind.startswith(prefix):
            return PEAK_FLOPS[prefix]
    return None


def measure_matmul_peak(device: jax.Device | None = None, size: int = 2048,
                        dtype: str = "float32", seconds: float = 1.0) -> float:
    """Achieved FLOP/s of a chain of square matmuls on `device` (the practical peak)."""
    device = device or jax.devices()[0]
    chain = 8

    @jax.jit
    def run(a, b):
        for _ in range(chain):
            a = jnp.dot(a, b, preferred_element_type=a.dtype) * 0.5
        return a

    key = jax.random.PRNGKey(0)
    a = jax.device_put(jax.random.normal(key, (size, size), dtype) / size ** 0.5, device)
    b = jax.device_put(jax.random.normal(key, (size, size), dtype) / size ** 0.5, device)
    run(a, b).block_until_ready()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run(a, b).block_until_ready()
        best = max(best, 2.0 * size ** 3 * chain / (time.perf_counter() - start))
    return best
