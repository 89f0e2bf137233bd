"""Token stores: exact round trip, fingerprints, and clear errors on damaged stores."""

import json
import os

import numpy as np
import pytest

from phi4_jax.data.store import MANIFEST, TOKENS, StoreError, TokenStore, write_store


def _docs(seed=0, n=50):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 100352, size=int(rng.integers(1, 200))).astype(np.uint32)
            for _ in range(n)]


def test_round_trip_and_fingerprint(tmp_path):
    docs = _docs()
    manifest = write_store(str(tmp_path / "s"), "s", docs, chunk_tokens=100)  # several appends
    store = TokenStore(str(tmp_path / "s"), verify=True)
    assert store.num_documents == len(docs) == manifest.num_documents
    assert store.num_tokens == sum(len(d) for d in docs)
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(store.document(i), d)
    np.testing.assert_array_equal(store.doc_lengths(), [len(d) for d in docs])
    assert store.compute_fingerprint() == manifest.fingerprint
    # Same content, different write chunking: same fingerprint; different content: different.
    assert write_store(str(tmp_path / "t"), "s", docs).fingerprint == manifest.fingerprint
    docs[3] = docs[3].copy()
    docs[3][0] ^= 1
    assert write_store(str(tmp_path / "u"), "s", docs).fingerprint != manifest.fingerprint


def test_loss_mask_round_trip(tmp_path):
    docs = _docs(1, 5)
    masks = [np.arange(len(d)) % 2 for d in docs]
    write_store(str(tmp_path / "m"), "m", docs, loss_masks=masks)
    store = TokenStore(str(tmp_path / "m"), verify=True)
    np.testing.assert_array_equal(np.asarray(store.loss_mask), np.concatenate(masks))


def test_missing_manifest_names_the_file(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(StoreError, match=r"empty/manifest.json: missing"):
        TokenStore(str(tmp_path / "empty"))


def test_truncated_tokens_file_names_the_file(tmp_path):
    write_store(str(tmp_path / "s"), "s", _docs())
    with open(tmp_path / "s" / TOKENS, "r+b") as f:
        f.truncate(100)
    with pytest.raises(StoreError, match=r"tokens.bin: 100 bytes"):
        TokenStore(str(tmp_path / "s"))


def test_changed_content_fails_verification(tmp_path):
    write_store(str(tmp_path / "s"), "s", _docs())
    with open(tmp_path / "s" / TOKENS, "r+b") as f:
        f.write(b"\x01\x02\x03\x04")
    TokenStore(str(tmp_path / "s"))  # cheap open trusts the manifest
    with pytest.raises(StoreError, match="fingerprint"):
        TokenStore(str(tmp_path / "s"), verify=True)


def test_other_tokenizer_is_refused(tmp_path):
    write_store(str(tmp_path / "s"), "s", _docs())
    path = tmp_path / "s" / MANIFEST
    raw = json.loads(path.read_text())
    raw["tokenizer_id"] = "llama3"
    path.write_text(json.dumps(raw))
    with pytest.raises(StoreError, match="tokenized with 'llama3'"):
        TokenStore(str(tmp_path / "s"))
