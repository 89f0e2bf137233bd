"""The mid-training mixture on the embedded corpus: CPU smoke runs of phi4_midtrain at 16K.

    python -m launch.local --exp=phi4_midtrain:smoke --workdir=workdirs/phi4_midtrain_smoke

Sources, packing and weights are data_mixtures/phi4_midtrain.py's (read from it: 30% long
context, 70% recall of Table 5); the stores are the embedded corpus (data_mixtures/embedded.py)
and three long-context stores cut from it, after the paper's rule (documents longer than 8K
tokens from books/academic and code, longer than 16K up-sampled, synthetic long data):

    long_8k_16k     the reference manual and licence (`acquired`) as one stream, cut into
                    documents of 12K tokens (the middle of 8K-16K)
    long_16k_plus   the standard library sources (`code`), cut into documents of 32K tokens:
                    best-fit packing splits each into two full 16K rows
    long_synthetic  the arithmetic word problems (`synthetic`), cut into 12K documents
    recall roles    the five embedded stores themselves (concat packing, as in pretraining)

So every row of a long source has positions from 0 past 8K (16K for long_16k_plus). The long
stores are built once (under a second) next to the embedded corpus, in the cache directory
(`data.cache_dir`, default tempdir/phi4_data), by `build_mixture`. The budget is 250B scaled like
the embedded corpus (1.5M / 10T): about two 16K rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from data_mixtures import embedded as embedded_mixture
from data_mixtures import phi4_midtrain, phi4_pretrain
from phi4_jax.data.embedded import DEFAULT_BUDGET
from phi4_jax.data.mixture import Mixture
from phi4_jax.data.store import MANIFEST, TokenStore, write_store

VERSION = 1
ROW = 16384  # the mid-training context
# long role -> (embedded role it is cut from, tokens per document)
LONG_SOURCES = {
    "long_8k_16k": ("acquired", 3 * ROW // 4),
    "long_16k_plus": ("code", 2 * ROW),
    "long_synthetic": ("synthetic", 3 * ROW // 4),
}


def cut(store: TokenStore, length: int) -> list[np.ndarray]:
    """The store's documents as one stream (each keeps its <|endoftext|>), cut into documents of
    exactly `length` tokens; the remainder is dropped."""
    stream = np.concatenate([np.asarray(store.document(i), np.uint32)
                             for i in range(store.num_documents)])
    return [stream[i:i + length] for i in range(0, len(stream) - length + 1, length)]


def build_long_stores(embedded: Mixture, directory: str) -> None:
    """Writes the LONG_SOURCES stores into `directory` from the embedded mixture's stores."""
    for role, (origin, length) in LONG_SOURCES.items():
        docs = cut(TokenStore(embedded.source(origin).path), length)
        if not docs:
            raise ValueError(f"embedded store {origin!r} has fewer than {length} tokens, too "
                             f"few for {role!r}")
        write_store(os.path.join(directory, role), role, docs,
                    info={"derived_from": origin, "version": VERSION})


def build_mixture(cache_dir: str) -> Mixture:
    """phi4_midtrain's mixture over the embedded corpus built under `cache_dir`."""
    embedded = embedded_mixture.build_mixture(cache_dir)
    stores = {s.name: TokenStore(s.path) for s in embedded.sources}
    key = hashlib.sha256(json.dumps(
        [VERSION, LONG_SOURCES, sorted((n, st.fingerprint) for n, st in stores.items())]
    ).encode()).hexdigest()[:12]
    final = os.path.join(os.path.abspath(cache_dir), f"embedded-midtrain-{key}")
    if not all(os.path.exists(os.path.join(final, r, MANIFEST)) for r in LONG_SOURCES):
        tmp = tempfile.mkdtemp(prefix=".embedded-midtrain-", dir=cache_dir)
        try:
            build_long_stores(embedded, tmp)
            shutil.rmtree(final, ignore_errors=True)  # a partial earlier build
            try:
                os.rename(tmp, final)
            except OSError:  # a concurrent builder won; its copy is complete
                if not all(os.path.exists(os.path.join(final, r, MANIFEST))
                           for r in LONG_SOURCES):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    paths = {**{s.name: s.path for s in embedded.sources},
             **{r: os.path.join(final, r) for r in LONG_SOURCES}}
    sources = tuple(dataclasses.replace(s, path=paths[s.name],
                                        unique_tokens=TokenStore(paths[s.name]).num_tokens)
                    for s in phi4_midtrain.MIXTURE.sources)
    budget = phi4_midtrain.TOTAL_TOKENS * DEFAULT_BUDGET / phi4_pretrain.TOTAL_TOKENS
    return phi4_midtrain.MIXTURE.replace(
        name="embedded_midtrain", sources=sources, total_tokens=budget,
        description="phi4_midtrain's weights over the embedded corpus and long documents "
                    "concatenated from it")
