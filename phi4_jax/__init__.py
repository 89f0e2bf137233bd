"""phi4-jax: the Phi-4 training recipe (arXiv 2412.08905) in JAX / Flax.

Top-level entry points (imported lazily so `import phi4_jax.data` stays light):

    phi4_jax.load_hf(path, dtype=None, **config_overrides) -> model  # checkpoint's dtype
    phi4_jax.save_hf(model, path)
    phi4_jax.load_gguf(path, dtype="float32", **config_overrides) -> model
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_hf": ("phi4_jax.convert.hf", "load_hf"),
    "save_hf": ("phi4_jax.convert.hf", "save_hf"),
    "load_gguf": ("phi4_jax.convert.gguf", "load_gguf"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'phi4_jax' has no attribute {name!r}")
