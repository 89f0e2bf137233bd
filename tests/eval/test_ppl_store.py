"""Perplexity on a token store (`--tasks=ppl:STORE_DIR`): every document of the store, decoded
for its bytes and words, against a closed form: a model that gives every token probability
1/V has token perplexity exactly V and bits per byte = tokens x log2(V) / bytes."""

from __future__ import annotations

import math

import numpy as np

from phi4_jax.data.store import write_store
from phi4_jax.eval import runners
from phi4_jax.eval.tasks import load_task

V = 50


class UniformLM:
    """Every token has log-probability -log(V); text is one letter per token id."""

    max_length, prefix_id = 8, 0

    def decode(self, ids):
        return "".join(chr(ord("a") + i % 26) for i in ids)

    def loglikelihood(self, pairs, progress=None):
        return [-len(k) * math.log(V) for _, k in pairs]


def test_token_store_documents_scored_as_the_closed_form(tmp_path):
    docs = [np.arange(1, 1 + n, dtype=np.int32) % V for n in (3, 11, 20)]  # 20 > max_length
    write_store(str(tmp_path / "store"), "heldout", docs)
    task = load_task(f"ppl:{tmp_path / 'store'}")
    assert task.kind == "ppl" and [d["tokens"] for d in task.docs] == [d.tolist() for d in docs]
    samples = runners.run_ppl(UniformLM(), task.docs)
    assert [s["tokens"] for s in samples] == [3, 11, 20]  # every token once, windows included
    metrics = runners.summarize("ppl", samples)["metrics"]
    assert math.isclose(metrics["token_perplexity"]["value"], V, rel_tol=1e-12)
    nbytes = 3 + 11 + 20  # one ASCII letter per token
    assert math.isclose(metrics["bits_per_byte"]["value"], 34 * math.log2(V) / nbytes,
                        rel_tol=1e-12)
