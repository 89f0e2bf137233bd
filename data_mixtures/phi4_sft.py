"""Phi-4 SFT data: one store of rendered ChatML conversations with assistant-only loss masks.

The paper: about 8B tokens of math, coding, reasoning, conversation, model identity and safety
data plus multilingual data in 40 languages, with the hallucination-refusal SFT examples. Their
split is not stated, so they are one source here: concatenate the conversation files into one
`python -m phi4_jax.data.sft --input ... --output DATA_ROOT/sft` run. Conversations
are packed best-fit (whole up to data.seq_len, each its own segment) and the store's per-token
masks carry the assistant-only loss into the batches.

    python -m phi4_jax.data.plan data_mixtures/phi4_sft.py --data_root DATA_ROOT
"""

from phi4_jax.data.mixture import Mixture, Source, Stage

TOTAL_TOKENS = 8e9  # the paper: "about 8B tokens"

MIXTURE = Mixture(
    name="phi4_sft",
    description="Phi-4 SFT conversations (ChatML, assistant-only loss)",
    total_tokens=TOTAL_TOKENS,
    sources=(Source("sft", path="sft", packing="best_fit"),),  # unique tokens: from the store
    stages=(Stage({"sft": 1.0}),),
)
