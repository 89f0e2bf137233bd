"""Rotary position embedding, half-split layout (the Hugging Face Phi-3 / Llama convention)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotates x [B, T, heads, H] by integer positions [B, T]; the math is done in float32.

    Dimension i in the first half pairs with dimension i + H/2 and rotates by the angle
    position * theta ** (-2i / H).
    """
    head_dim = x.shape[-1]
    half = head_dim // 2
    inv_freq = theta ** (-jnp.arange(0, half, dtype=jnp.float32) * 2.0 / head_dim)  # [H/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
