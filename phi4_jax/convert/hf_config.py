"""The one mapping between `ModelConfig` and Hugging Face config.json (Phi3, Llama, Mistral).

`from_hf_config` / `to_hf_config` translate the shape fields through `HF_KEYS` and reject what
phi4_jax does not implement. `checkpoint_dtype` reads the dtype a checkpoint was saved in, the
compute dtype `phi4_jax.load_hf` uses unless told otherwise (transformers' `dtype="auto"`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from phi4_jax.model.config import DTYPES, ModelConfig

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


# safetensors header dtype codes of the floating-point dtypes a ModelConfig can compute in.
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def checkpoint_dtype(hf: Mapping[str, Any], tensor_dtypes: Iterable[str] = ()) -> str:
    """The dtype a checkpoint stores its weights in, as a `ModelConfig.dtype` name.

    As transformers' `dtype="auto"`: config.json's `dtype` (or the older `torch_dtype`) when
    set, else the first floating-point tensor's dtype in the safetensors headers
    (`tensor_dtypes`, codes such as "BF16", in file order), else float32. Raises ValueError
    for a dtype phi4_jax cannot compute in (e.g. float64): pass `dtype=` to choose one.
    """
    declared = hf.get("dtype") or hf.get("torch_dtype")
    if declared is None:
        for code in tensor_dtypes:
            if code in _SAFETENSORS_DTYPES:
                return _SAFETENSORS_DTYPES[code]
            if code.startswith(("F", "BF")):
                declared = code
                break
        else:
            return "float32"
    name = str(declared).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"checkpoint dtype {declared!r} is not one phi4_jax computes in "
                         f"{DTYPES}; pass dtype= to choose one")
    return name
