"""Model configuration: one frozen dataclass, one preset table, one Hugging Face key mapping."""

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

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

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


def from_experiment(section: Any) -> ModelConfig:
    """An experiment's `model` section (a preset name plus optional per-field overrides, None
    meaning "the preset's value") -> ModelConfig."""
    overrides = {k: v for k, v in section.items() if k != "preset" and v is not None}
    return preset(section["preset"], **overrides)


# The one mapping between our field names and Hugging Face `Phi3Config` keys.
HF_KEYS: Mapping[str, str] = {
    "num_layers": "num_hidden_layers",
    "embed_dim": "hidden_size",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "mlp_dim": "intermediate_size",
    "vocab_size": "vocab_size",
    "rope_theta": "rope_theta",
    "max_seq_len": "max_position_embeddings",
    "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
    "init_std": "initializer_range",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
}
SUPPORTED_HF_ARCHITECTURES = ("Phi3ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM")


def to_hf_config(config: ModelConfig, architecture: str = "Phi3ForCausalLM") -> dict[str, Any]:
    """Returns a Hugging Face config.json dict for `config`."""
    if architecture not in SUPPORTED_HF_ARCHITECTURES:
        raise ValueError(f"unsupported architecture {architecture!r}; supported: "
                         f"{SUPPORTED_HF_ARCHITECTURES}")
    out: dict[str, Any] = {hf: getattr(config, ours) for ours, hf in HF_KEYS.items()}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids a shrunken vocab lacks
        if out[key] is not None and not 0 <= out[key] < config.vocab_size:
            out[key] = None
    model_type = {"Phi3ForCausalLM": "phi3", "LlamaForCausalLM": "llama",
                  "MistralForCausalLM": "mistral"}[architecture]
    out.update(architectures=[architecture], model_type=model_type, hidden_act="silu",
               attention_bias=False, mlp_bias=False, attention_dropout=0.0,
               torch_dtype=config.param_dtype, dtype=config.param_dtype, use_cache=True,
               rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta})
    if architecture == "Phi3ForCausalLM":
        out.update(resid_pdrop=0.0, embd_pdrop=0.0, sliding_window=None,
                   original_max_position_embeddings=config.max_seq_len, partial_rotary_factor=1.0)
    return out


def from_hf_config(hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds a ModelConfig from a Hugging Face config dict, rejecting what we do not implement."""
    archs = hf.get("architectures") or ["Phi3ForCausalLM"]
    if archs[0] not in SUPPORTED_HF_ARCHITECTURES:
        raise ValueError(f"unsupported architecture {archs[0]!r} in config.json; supported: "
                         f"{SUPPORTED_HF_ARCHITECTURES}")
    for key, bad in (("rope_scaling", lambda v: v not in (None, {}) and
                      (v.get("rope_type", v.get("type")) not in (None, "default"))),
                     ("partial_rotary_factor", lambda v: v not in (None, 1.0)),
                     ("sliding_window", lambda v: v not in (None, 0)
                      and archs[0] == "Phi3ForCausalLM"
                      and v < hf.get("max_position_embeddings", 0)),
                     ("hidden_act", lambda v: v not in ("silu", "swish")),
                     ("attention_bias", lambda v: bool(v)),
                     ("mlp_bias", lambda v: bool(v))):
        if key in hf and bad(hf[key]):
            raise ValueError(f"config.json field {key}={hf[key]!r} is not supported by phi4_jax")
    kwargs: dict[str, Any] = {}
    for ours, theirs in HF_KEYS.items():
        if theirs in hf and hf[theirs] is not None:
            kwargs[ours] = hf[theirs]
    rope_params = hf.get("rope_parameters") or {}
    if "rope_theta" not in hf and "rope_theta" in rope_params:
        kwargs["rope_theta"] = rope_params["rope_theta"]
    if "head_dim" not in kwargs:
        kwargs["head_dim"] = hf["hidden_size"] // hf["num_attention_heads"]
    elif kwargs["head_dim"] * hf["num_attention_heads"] != hf["hidden_size"] and \
            archs[0] == "Phi3ForCausalLM":
        raise ValueError(
            f"config.json head_dim={kwargs['head_dim']} does not match hidden_size / "
            f"num_attention_heads = {hf['hidden_size']} / {hf['num_attention_heads']}")
    if "num_kv_heads" not in kwargs:
        kwargs["num_kv_heads"] = kwargs["num_heads"]
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = kwargs[key][0]
    kwargs["rope_theta"] = float(kwargs.get("rope_theta", 10_000.0))
    kwargs.update(overrides)
    return ModelConfig(**kwargs)
