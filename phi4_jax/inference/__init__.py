"""Inference apart from the model: decoding, sampling, and the CPU decode fast path.

    decode.py      `generate` (prefill + KV-cache loop; `n` samples per shared prefill)
    loop.py        the pieces of the decode program (prefill, step, emit, while loop)
    scoring.py     `token_logprobs`, `score`, `prompt_logprobs` (one forward pass);
                   `shared_prefix_logprobs` (continuations against their context's KV cache)
    trie.py        `trie_logprobs`: rows packed as token tries, each distinct prefix run once
    sampling.py    `SamplingConfig`, `RowSampling` (per-row settings), `sample`, row keys
    packed.py      small models: packed per-layer weights, head-major prompt + generated cache
    engine.py      `Wave`: a batch decoded in segments (the server streams, stops, cancels)
    dtypes.py      `with_dtypes`: a model copy computing or storing weights in another dtype
    kernels/       the CPU FFI kernel the packed path multiplies with (C++, built on first use)

The model (`phi4_jax.model`) provides the cached forward pass these build on
(`Transformer.hidden_cached` / `forward_cached` with a `KVCache`) and knows nothing of them.
"""

from phi4_jax.inference.decode import GenerateOutput, generate
from phi4_jax.inference.sampling import GREEDY, RowSampling, SamplingConfig, sample
from phi4_jax.inference.scoring import ScoreOutput, prompt_logprobs, score, token_logprobs

__all__ = ["GREEDY", "GenerateOutput", "RowSampling", "SamplingConfig", "ScoreOutput", "generate",
           "prompt_logprobs", "sample", "score", "token_logprobs"]
