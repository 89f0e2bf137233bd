"""Decoding and scoring in another precision: `with_dtypes(model, dtype=..., param_dtype=...)`.

    fast = with_dtypes(model, param_dtype="bfloat16")   # bf16 weights, float32 activations
    full = with_dtypes(model, dtype="bfloat16")         # bf16 compute (weights cast per use)

`param_dtype="bfloat16"` rounds every parameter to bfloat16 once and keeps computing in the
model's dtype: on the CPU the decode kernel then streams bfloat16 weight panels (half the bytes
of a bandwidth-bound step, `packed.panel_dtype`) while activations, norms, attention and the
softmax stay float32, so the only rounding is the weights' own. `dtype="bfloat16"` computes in
bfloat16 as well (every product's output rounded), which is what `--dtype bfloat16` loads give.
The effect of each on SmolLM2-135M's log-probs is measured in docs/serve.md.

The copy is a new `Transformer` (its own packed-weight cache); the original is unchanged. Use it
for evaluation and data generation (`ModelSampler(weight_dtype=...)`, the server's
`--param_dtype`); training keeps float32 master weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from phi4_jax.model import Transformer, abstract_model


def with_dtypes(model: Transformer, *, dtype: str | None = None,
                param_dtype: str | None = None) -> Transformer:
    """The model computing in `dtype` with parameters stored in `param_dtype` (None: keep)."""
    changes = {k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v}
    config = model.config.replace(**changes)
    if config == model.config:
        return model
    out = abstract_model(config)
    state = nnx.state(out, nnx.Param)
    values = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    target = config.weight_dtype
    values = jax.tree.map(
        lambda x: x.astype(target) if jnp.issubdtype(x.dtype, jnp.floating) else x, values)
    nnx.replace_by_pure_dict(state, values)
    nnx.update(out, state)
    return out
