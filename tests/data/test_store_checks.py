"""Token-store checks: a store rewritten in place (manifest untouched) is caught at resume by the
per-chunk checksums; old stores without them still work (one warning); token ids outside the
model's vocabulary are refused at open, naming the store."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from phi4_jax.data import pipeline
from phi4_jax.data import store as store_lib
from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.store import LOSS_MASK, MANIFEST, OFFSETS, TOKENS, StoreError, TokenStore
from tests.data.conftest import random_store, toy_mixture


def _iterator(root, **kw):
    return pipeline.build_iterator(toy_mixture(), seq_len=64, global_batch_size=8,
                                   data_root=root, process_index=0, process_count=1, **kw)


def _rewrite_in_place(path: str, name: str, dtype) -> None:
    """New content, same size, manifest untouched (what passed the old fingerprint check)."""
    data = np.memmap(os.path.join(path, name), dtype=dtype, mode="r+")
    data[:] = data[::-1].copy() + 1
    data.flush()
    del data


def test_a_store_rewritten_in_place_fails_the_resume_naming_source_and_chunk(toy_root, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(toy_root, root)
    it = _iterator(root)
    next(it)
    state = it.get_state()
    manifest = (tmp_path / "data" / "b" / MANIFEST).read_text()
    _rewrite_in_place(os.path.join(root, "b"), TOKENS, "<u4")
    assert (tmp_path / "data" / "b" / MANIFEST).read_text() == manifest
    fresh = _iterator(root)
    assert fresh.data.fingerprints == it.data.fingerprints  # the manifests still agree
    with pytest.raises(pipeline.DataStateError,
                       match=r"source 'b': .*b/tokens.bin: chunk 0 \(tokens 0\.\.\d+\) does not "
                             r"match its checksum in the manifest"):
        fresh.set_state(state)
    _iterator(toy_root).set_state(state)  # the untouched original still resumes


def test_offsets_and_loss_mask_rewrites_are_caught(tmp_path):
    for name, dtype in ((OFFSETS, None), (LOSS_MASK, np.uint8)):
        path = str(tmp_path / name)
        random_store(path, "c", 12, 700, seed=3, with_mask=True)
        if dtype is None:  # move one document boundary; same shape and bounds
            offsets = np.load(os.path.join(path, OFFSETS))
            offsets[1] += 1
            np.save(os.path.join(path, OFFSETS), offsets)
        else:
            _rewrite_in_place(path, name, dtype)
        with pytest.raises(StoreError, match=f"{name}: .*does not match its checksum"):
            TokenStore(path).verify_chunks()


def test_the_check_is_bounded_and_sampled(tmp_path, monkeypatch):
    monkeypatch.setattr(store_lib, "CHECKSUM_CHUNK_TOKENS", 64)  # many chunks in a small store
    path = str(tmp_path / "s")
    random_store(path, "s", 60, 200, seed=5)
    store = TokenStore(path)
    chunks = len(store.manifest.checksums["tokens"])
    assert chunks == -(-store.num_tokens // 64) > 40
    assert store.verify_chunks(sample=8, seed=0) == 8  # bounded: 8 chunks of the store
    assert store.verify_chunks(sample=None) == chunks
    tokens = np.memmap(os.path.join(path, TOKENS), dtype="<u4", mode="r+")
    tokens[64 * 20] ^= 1  # one token in chunk 20
    tokens.flush()
    del tokens
    store = TokenStore(path)
    with pytest.raises(StoreError, match=r"chunk 20 \(tokens 1280\.\.1344\)"):
        store.verify_chunks(sample=None)
    missed = [s for s in range(50) if 20 not in _picks(store, s)]
    assert store.verify_chunks(sample=8, seed=missed[0]) == 8  # a sample can miss one chunk


def _picks(store, seed):
    count = len(store.manifest.checksums["tokens"])
    rest = np.random.default_rng(seed).choice(np.arange(1, count - 1), 6, replace=False)
    return {0, count - 1, *map(int, rest)}


def _strip_new_fields(path: str) -> None:
    with open(os.path.join(path, MANIFEST)) as f:
        raw = json.load(f)
    del raw["checksums"], raw["max_token_id"]
    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump(raw, f)


def test_stores_written_before_the_checks_still_work_and_warn_once(toy_root, tmp_path, caplog):
    root = str(tmp_path / "data")
    shutil.copytree(toy_root, root)
    for name in ("a", "b", "c", "tiny"):
        _strip_new_fields(os.path.join(root, name))
    it = _iterator(root)
    expected = next(it)
    state = it.get_state()
    with caplog.at_level(logging.WARNING, logger=store_lib.__name__):
        again = _iterator(root)
        again.set_state(state)
        again.set_state(state)
    warnings = [r.getMessage() for r in caplog.records if "no per-chunk checksums" in
                r.getMessage()]
    assert len(warnings) == 4 and all(root in w for w in warnings)  # one per store, once
    fresh = _iterator(root)
    np.testing.assert_array_equal(next(fresh)["tokens"], expected["tokens"])
    store = TokenStore(os.path.join(root, "a"))
    assert store.manifest.max_token_id is None
    assert store.max_token_id == int(np.max(store.tokens))  # computed once with numpy
    with pytest.raises(StoreError, match="outside the model's vocabulary"):
        store.check_vocab(store.max_token_id)


def test_token_ids_outside_the_vocabulary_are_refused_at_open(tmp_path):
    path = str(tmp_path / "wide")
    store_lib.write_store(path, "wide", [np.array([1, 2, 100_500], np.uint32),
                                         np.array([7], np.uint32)])
    assert TokenStore(path).manifest.max_token_id == 100_500  # recorded at write: O(1) check
    with pytest.raises(StoreError, match=rf"{path}: source 'wide' holds token id 100500, outside "
                                         r"the model's vocabulary of 100352 ids"):
        TokenStore(path, vocab_size=100_352)
    TokenStore(path, vocab_size=100_501)
    mixture = Mixture("wide", sources=(Source("wide", path),), stages=(Stage({"wide": 1.0}),),
                      total_tokens=64)
    with pytest.raises(StoreError, match="source 'wide' holds token id 100500"):
        pipeline.build_iterator(mixture, seq_len=4, global_batch_size=2, process_index=0,
                                process_count=1, vocab_size=100_352)
    _strip_new_fields(path)  # an old store: the largest id is computed at open
    with pytest.raises(StoreError, match="holds token id 100500"):
        TokenStore(path, vocab_size=100_352)
