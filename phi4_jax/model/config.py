"""Model configuration: one frozen dataclass and one preset table."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attn_out", "offload_dots")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "splash")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Phi-4-family decoder.

    The defaults here are Phi-4 14B's released configuration; presets override what differs.
    `dtype` is the compute dtype, `param_dtype` the storage dtype of parameters.
    """

    num_layers: int = 40
    embed_dim: int = 5120
    num_heads: int = 40
    num_kv_heads: int = 10
    head_dim: int = 128
    mlp_dim: int = 17920
    vocab_size: int = 100352
    rope_theta: float = 250_000.0
    max_seq_len: int = 16384
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02
    bos_token_id: int | None = 100257
    eos_token_id: int | None = 100265
    pad_token_id: int | None = 100349
    # Numerics and execution.
    dtype: str = "bfloat16"
    param_dtype: str = "float32"
    remat: str = "none"
    scan_layers: bool = True
    attention: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the offending field for an inconsistent configuration."""
        positive = ("num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
                    "vocab_size", "max_seq_len")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} is not divisible by "
                f"ModelConfig.num_kv_heads={self.num_kv_heads} (grouped-query attention needs "
                "a whole number of query heads per key/value head)")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for RoPE")
        if self.rope_theta <= 0:
            raise ValueError(f"ModelConfig.rope_theta must be positive, got {self.rope_theta}")
        if self.norm_eps <= 0:
            raise ValueError(f"ModelConfig.norm_eps must be positive, got {self.norm_eps}")
        for name, allowed in (("remat", REMAT_POLICIES), ("attention", ATTENTION_IMPLS),
                              ("dtype", DTYPES), ("param_dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ModelConfig.{name}={getattr(self, name)!r}; choose one of {allowed}")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def weight_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# One table of presets. phi4_14b is the released microsoft/phi-4 configuration (RoPE base 250K as
# released; the pretraining experiment sets 10K). ablation_7b is the Phi-3-small shape (the Phi
# family's 7B, which already uses the 100,352-token tiktoken vocabulary) with Phi-4's SwiGLU /
# full-attention block: 7.80B parameters. small is a ~109M model for CPU benchmarks; tiny is for
# tests and CPU end-to-end runs (it keeps the real vocabulary so the Phi-4 tokenizer feeds it).
PRESETS: Mapping[str, ModelConfig] = {
    "phi4_14b": ModelConfig(),
    "ablation_7b": ModelConfig(num_layers=32, embed_dim=4096, num_heads=32, num_kv_heads=8,
                               head_dim=128, mlp_dim=14336, rope_theta=10_000.0, max_seq_len=4096),
    "small": ModelConfig(num_layers=8, embed_dim=768, num_heads=12, num_kv_heads=4, head_dim=64,
                         mlp_dim=2560, vocab_size=32064, rope_theta=10_000.0, max_seq_len=2048,
                         bos_token_id=1, eos_token_id=32000, pad_token_id=32000),
    "tiny": ModelConfig(num_layers=2, embed_dim=128, num_heads=4, num_kv_heads=2, head_dim=32,
                        mlp_dim=384, rope_theta=10_000.0, max_seq_len=16384),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """Returns the named preset with `overrides` applied (unknown names list the choices)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; presets are {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def from_experiment(section: Mapping[str, Any]) -> ModelConfig:
    """An experiment's `model` section (a ConfigDict or dict: `preset` plus optional per-field
    overrides, None meaning "the preset's value") -> ModelConfig. A key that is no ModelConfig
    field raises, listing the fields (`phi4_jax.train.config` also checks the values' types)."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(section.keys()) - fields - {"preset"})
    if unknown:
        raise ValueError(f"unknown config key model.{unknown[0]}; the model section has "
                         f"'preset' and the ModelConfig fields {sorted(fields)}")
    overrides = {k: v for k, v in section.items() if k != "preset" and v is not None}
    return preset(section["preset"], **overrides)
