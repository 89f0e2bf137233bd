"""Inference apart from the model: decoding, sampling, and the CPU decode fast path.

    decode.py      `generate` (prefill + KV-cache loop), `token_logprobs`, `score`
    sampling.py    `SamplingConfig`, `sample`, per-row step keys
    packed.py      small models at small batch: packed per-layer weights, head-major cache
    kernels/       the CPU FFI kernel the packed path multiplies with (C++, built on first use)

The model (`phi4_jax.model`) provides the cached forward pass these build on
(`Transformer.hidden_cached` / `forward_cached` with a `KVCache`) and knows nothing of them.
"""

from phi4_jax.inference.decode import GenerateOutput, ScoreOutput, generate, score, token_logprobs
from phi4_jax.inference.sampling import GREEDY, SamplingConfig, sample

__all__ = ["GREEDY", "GenerateOutput", "SamplingConfig", "ScoreOutput", "generate", "sample",
           "score", "token_logprobs"]
