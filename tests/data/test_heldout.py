"""Held-out slices (phi4_jax/data/heldout.py): deterministic, never trained on, or a source's
own held-out store."""

import os

import numpy as np
import pytest

from phi4_jax.data import heldout
from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.pipeline import MixtureData
from phi4_jax.data.store import open_store
from tests.data.conftest import random_store

SEQ = 32


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("heldout"))
    random_store(os.path.join(root, "a"), "a", 60, 200, seed=1)
    random_store(os.path.join(root, "b"), "b", 50, 90, seed=2)
    random_store(os.path.join(root, "b_heldout"), "b", 10, 90, seed=3)
    return root


def mixture(b_heldout=None, packing="concat"):
    return Mixture(name="m", total_tokens=20_000, stages=(Stage({"a": 0.6, "b": 0.4}),),
                   sources=(Source("a", "a", packing=packing), Source("b", "b",
                                                                     heldout=b_heldout)))


def docs_read(data: MixtureData, source: int) -> set[int]:
    """Every document the whole training plan reads from source `source`."""
    rows = np.arange(data.plan.sources[source].rows)
    return set(data.layouts[source].pieces(rows).doc.tolist())


def test_carve_is_deterministic_and_sized():
    lengths = np.arange(1, 101)
    a = heldout.carve(lengths, "web", 300)
    assert np.array_equal(a, heldout.carve(lengths.copy(), "web", 300))
    assert lengths[a].sum() >= 300 and lengths[a].sum() - lengths[a].max() < 300 + 100
    assert not np.array_equal(a, heldout.carve(lengths, "code", 300))  # per source
    with pytest.raises(ValueError, match="source 'web'.*eval.heldout_rows"):
        heldout.carve(lengths, "web", lengths.sum() // 2)


@pytest.mark.parametrize("packing", ["concat", "best_fit"])
def test_heldout_documents_are_never_trained_on(root, packing):
    rows = 4
    data = MixtureData(mixture(packing=packing), seq_len=SEQ, global_batch_size=8, seed=0,
                       data_root=root, heldout_tokens=rows * SEQ)
    plain = MixtureData(mixture(packing=packing), seq_len=SEQ, global_batch_size=8, seed=0,
                        data_root=root)
    cut = heldout.carve(data.stores[0].doc_lengths(), "a", rows * SEQ)
    assert cut.size and not docs_read(data, 0) & set(cut.tolist())
    assert set(cut.tolist()) <= docs_read(plain, 0)  # without held-out rows they are trained on
    assert data.plan_digest() != plain.plan_digest()  # a resume across the change is refused
    batches = heldout.heldout_batches(data.mixture, rows=rows, seq_len=SEQ)
    a = batches["a"]
    assert a["tokens"].shape == (rows, SEQ) and a["loss_mask"].sum() > 0
    # every held-out token comes from the carved documents of store a
    store = open_store(data.mixture.source("a").path)
    carved = np.concatenate([store.document(int(d)) for d in cut])
    real = a["segment_ids"] > 0
    assert np.isin(a["tokens"][real], carved).all()


def test_a_source_with_its_own_heldout_store(root):
    data = MixtureData(mixture(b_heldout="b_heldout"), seq_len=SEQ, global_batch_size=8,
                       data_root=root, heldout_tokens=2 * SEQ)
    assert data.layouts[1].docs is None  # b trains on its whole store
    batches = heldout.heldout_batches(data.mixture, rows=2, seq_len=SEQ)
    own = open_store(os.path.join(root, "b_heldout"))
    tokens = np.concatenate([own.document(i) for i in range(10)])
    real = batches["b"]["segment_ids"] > 0
    assert np.isin(batches["b"]["tokens"][real], tokens).all()
