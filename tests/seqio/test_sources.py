"""A registered seqio Task read back as one of our mixture sources."""

from __future__ import annotations

import os

import numpy as np
import pytest

from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.pipeline import build_iterator
from phi4_jax.data.store import open_store, read_manifest, write_store
from phi4_jax.data.tokenizer import tokenize_documents
from phi4_jax.seqio import iter_task_documents, seqio_source

DOCS = [[5, 6, 7], [], [100, 101, 102, 103, 104], [42], [9, 9, 9, 9]]
TEXTS = ["The first document.", "", "A second one, with more words in it."]


def register_toy_tasks(seqio):
    import tensorflow as tf

    def ids_fn(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_generator(
            lambda: ({"targets": np.array(d, np.int32), "text": "x"} for d in DOCS),
            output_signature={"targets": tf.TensorSpec([None], tf.int32),
                              "text": tf.TensorSpec([], tf.string)})

    def text_fn(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensor_slices({"text": TEXTS})

    vocab = seqio.PassThroughVocabulary(1000)
    for name, fn, features in (
            ("toy_ids", ids_fn, {"targets": seqio.Feature(vocab, add_eos=False)}),
            ("toy_text", text_fn, {})):
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(fn, splits=["train"]),
                               output_features=features)


def test_a_seqio_task_read_back_as_a_source_yields_its_examples(seqio, tmp_path):
    register_toy_tasks(seqio)
    assert [d.tolist() for d in iter_task_documents("toy_ids")] == DOCS
    source = seqio_source("toy_ids", str(tmp_path), name="toy", max_epochs=50)
    assert source.name == "toy" and source.max_epochs == 50
    store = open_store(source.path)
    non_empty = [d for d in DOCS if d]
    assert [store.document(i).tolist() for i in range(store.num_documents)] == non_empty
    assert source.unique_tokens == sum(map(len, non_empty))
    assert store.manifest.info["seqio_skipped_empty"] == 1
    # Materialized once: the same request reuses the store, a different one rewrites it.
    mtime = os.path.getmtime(os.path.join(source.path, "manifest.json"))
    assert seqio_source("toy_ids", str(tmp_path), name="toy").path == source.path
    assert os.path.getmtime(os.path.join(source.path, "manifest.json")) == mtime
    two = seqio_source("toy_ids", str(tmp_path), name="toy", max_examples=3)
    assert read_manifest(two.path).num_documents == 2

    # Declared beside a token store, it feeds our pipeline like any other source.
    web = str(tmp_path / "web")
    write_store(web, "web", [np.arange(1, 40, dtype=np.uint32)])
    mixture = Mixture(name="with_seqio", total_tokens=256, sources=(
        Source("web", web, max_epochs=50), source), stages=(Stage({"web": 0.5, "toy": 0.5}),))
    batch = next(build_iterator(mixture, seq_len=8, global_batch_size=4, num_steps=8,
                                process_index=0, process_count=1, provenance=True))
    assert batch["tokens"].shape == (4, 8)
    toy_tokens = {t for d in DOCS for t in d}
    rows = [set(r.tolist()) for r, s in zip(batch["tokens"], batch["source"]) if s == 1]
    assert rows and all(r <= toy_tokens for r in rows)  # source 1: the seqio Task's documents


def test_a_text_feature_is_tokenized_as_prepare_does(seqio, tmp_path):
    register_toy_tasks(seqio)
    source = seqio_source("toy_text", str(tmp_path), feature="text")
    store = open_store(source.path)
    expected = tokenize_documents([t for t in TEXTS if t])
    assert [store.document(i).tolist() for i in range(store.num_documents)] == expected


def test_bad_requests_are_named(seqio, tmp_path):
    register_toy_tasks(seqio)
    with pytest.raises(ValueError, match="no split 'validation'"):
        seqio_source("toy_ids", str(tmp_path), split="validation")
    with pytest.raises(ValueError, match="no feature 'inputs'"):
        seqio_source("toy_ids", str(tmp_path), feature="inputs")
    with pytest.raises(ValueError, match=r"outside \[0, 50\)"):
        seqio_source("toy_ids", str(tmp_path), vocab_size=50, refresh=True)
