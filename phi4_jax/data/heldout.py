"""Held-out rows of each mixture source: fixed, deterministic, never trained on.

A run that evaluates held-out loss (`eval.heldout_rows` = R > 0) needs R rows of `data.seq_len`
tokens per source. Where they come from:

- the source names its own held-out store (`Source(..., heldout="web_heldout")`): its rows,
  laid out like the source's (same packing and seed); training reads the whole training store.
- otherwise they are carved out of the source's store: the store's documents in the order of a
  permutation seeded only by the source's name (PCG64 raw draws, stable across numpy versions,
  independent of data.seed, the run and the host count), taken until they hold R x seq_len
  tokens. Those documents are the held-out slice: the training layout of that source skips them
  (`row_layout.make_layout(..., docs=train_docs(...))`), in every epoch. The slice depends only
  on the store, the source name and R x seq_len, so every host and every resume carves the same
  one; a carve over HELDOUT_MAX_FRACTION of a store's tokens is refused.

The held-out rows are then the first R rows of the slice's own layout (epoch 0 of its
permutation; a best-fit source may reach into epoch 1, which repeats held-out documents only).
Changing R changes the slice and so the training data: the data plan records it, and a resume
under another R is refused (pipeline.check_state).
"""

from __future__ import annotations

import numpy as np

from phi4_jax.data.mixture import Mixture
from phi4_jax.data.packing import empty_batch, fill_rows
from phi4_jax.data.row_layout import make_layout, name_key
from phi4_jax.data.store import open_store

HELDOUT_MAX_FRACTION = 0.25
_KEY = 0x68656C64  # "held": keeps the carve's stream apart from the epoch permutations


def carve(lengths: np.ndarray, name: str, tokens: int) -> np.ndarray:
    """Sorted indices of the held-out documents of source `name` (document lengths
    `lengths`): the shortest prefix of its name-seeded order holding >= `tokens` tokens."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if tokens > HELDOUT_MAX_FRACTION * total:
        raise ValueError(f"source {name!r}: holding out {tokens} tokens (eval.heldout_rows x "
                         f"data.seq_len) would take over {HELDOUT_MAX_FRACTION:.0%} of its "
                         f"{total} tokens; lower eval.heldout_rows or give the source a "
                         "held-out store (Source(..., heldout=PATH))")
    bits = np.random.PCG64(np.random.SeedSequence([_KEY, *name_key(name)]))
    order = np.argsort(bits.random_raw(len(lengths)), kind="stable")
    count = int(np.searchsorted(np.cumsum(lengths[order]), tokens)) + 1
    return np.sort(order[:min(count, len(order))])


def train_docs(num_docs: int, heldout: np.ndarray) -> np.ndarray:
    """The documents training reads: all but the held-out ones."""
    return np.setdiff1d(np.arange(num_docs, dtype=np.int64), heldout)


def heldout_batches(mixture: Mixture, *, rows: int, seq_len: int, seed: int = 0
                    ) -> dict[str, dict[str, np.ndarray]]:
    """Source name -> its `rows` held-out rows (a batch dict, packing.BATCH_KEYS) of a resolved
    mixture (absolute store paths)."""
    out = {}
    for source in mixture.sources:
        if source.heldout:
            store, docs = open_store(source.heldout), None
        else:
            store = open_store(source.path)
            docs = carve(store.doc_lengths(), source.name, rows * seq_len)
        layout = make_layout(store, source.packing, seq_len, seed, source.name, docs=docs)
        batch = empty_batch(rows, seq_len)
        fill_rows(batch, np.arange(rows), layout.pieces(np.arange(rows)), store)
        out[source.name] = batch
    return out
