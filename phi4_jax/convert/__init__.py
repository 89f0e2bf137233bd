"""Interop: Hugging Face safetensors (Phi-3 and Llama naming) and GGUF import."""

from phi4_jax.convert.hf import load_hf, save_hf

__all__ = ["load_hf", "save_hf"]
