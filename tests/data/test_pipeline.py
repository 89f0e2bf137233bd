"""Sampling, packing and sharding checked against independent references built from the stores."""

import collections
import types

import numpy as np
import pytest

from phi4_jax.data.mixture import Stage
from phi4_jax.data.pipeline import MixtureData, build_from_config, build_iterator
from phi4_jax.data.plan import MixturePlanError
from phi4_jax.data.row_layout import epoch_permutation
from phi4_jax.data.store import TokenStore
from phi4_jax.data.tokenizer import PAD
from tests.data.conftest import toy_mixture

T, B = 64, 8


@pytest.fixture(scope="module")
def toy(toy_root):
    return MixtureData(toy_mixture(), seq_len=T, global_batch_size=B, data_root=toy_root)


@pytest.fixture(scope="module")
def all_batches(toy):
    return [toy.host_batch(s, provenance=True) for s in range(toy.num_steps)]


def test_batch_contract_row_by_row(toy, all_batches):
    stores = toy.stores
    for batch in all_batches[:12]:
        assert batch["tokens"].shape == (B, T)
        for key, dtype in [("tokens", np.int32), ("targets", np.int32), ("positions", np.int32),
                           ("segment_ids", np.int32), ("loss_mask", np.float32)]:
            assert batch[key].dtype == dtype
        for r in range(B):
            store = stores[batch["source"][r]]
            doc, pos = batch["document"][r], batch["doc_position"][r]
            real = doc >= 0
            n = int(real.sum())
            assert real[:n].all() and not real[n:].any()  # padding only at the end
            assert (batch["tokens"][r, n:] == PAD).all()
            assert (batch["segment_ids"][r, n:] == 0).all()
            assert (batch["loss_mask"][r, n:] == 0).all()
            expected_segment, expected_position = 0, 0
            epoch = batch["epoch"][r]
            for t in range(n):
                new = t == 0 or doc[t] != doc[t - 1] or epoch[t] != epoch[t - 1]
                expected_segment += new
                expected_position = 0 if new else expected_position + 1
                assert batch["segment_ids"][r, t] == expected_segment
                assert batch["positions"][r, t] == expected_position
                lo, hi = store.offsets[doc[t]], store.offsets[doc[t] + 1]
                assert batch["tokens"][r, t] == store.tokens[lo + pos[t]]
                if lo + pos[t] + 1 < hi:
                    assert batch["targets"][r, t] == store.tokens[lo + pos[t] + 1]
                    mask = 1 if store.loss_mask is None else store.loss_mask[lo + pos[t] + 1]
                    assert batch["loss_mask"][r, t] == mask
                else:
                    assert batch["targets"][r, t] == PAD and batch["loss_mask"][r, t] == 0


def test_concat_rows_equal_the_naive_epoch_stream(toy, all_batches, toy_root):
    store = TokenStore(f"{toy_root}/a")
    rows = [b["tokens"][r] for b in all_batches for r in range(B) if b["source"][r] == 0]
    epochs = len(rows) * T // store.num_tokens + 1
    stream = []
    for e in range(epochs):
        for d in epoch_permutation(store.num_documents, 0, "a", e):
            stream += store.document(d).tolist()
    for k, row in enumerate(rows):
        assert row.tolist() == stream[k * T:(k + 1) * T]


def _reads(all_batches, source):
    """(epoch, doc, position) of every token read from `source`."""
    out = []
    for b in all_batches:
        for r in np.nonzero(b["source"] == source)[0]:
            real = b["document"][r] >= 0
            out += zip(b["epoch"][r][real].tolist(), b["document"][r][real].tolist(),
                       b["doc_position"][r][real].tolist())
    return out


@pytest.mark.parametrize("source", [0, 1, 2, 3])
def test_every_source_read_exactly_its_planned_epochs(toy, all_batches, source):
    store = toy.stores[source]
    plan = toy.plan.sources[source]
    reads = _reads(all_batches, source)
    assert len(reads) == len(set(reads))  # no token (so no window) repeats within an epoch
    by_epoch = collections.defaultdict(set)
    for e, d, p in reads:
        by_epoch[e].add((d, p))
    everything = {(d, p) for d in range(store.num_documents)
                  for p in range(store.offsets[d + 1] - store.offsets[d])}
    last = max(by_epoch)
    assert sorted(by_epoch) == list(range(last + 1))
    for e in range(last):
        assert by_epoch[e] == everything  # each full epoch reads every token exactly once
    assert len(by_epoch[last]) < len(everything) or last + 1 == len(reads) / store.num_tokens
    realized_epochs = len(reads) / store.num_tokens
    if plan.packing == "concat":
        assert len(reads) == plan.rows * T
        assert realized_epochs == pytest.approx(plan.epochs, abs=1e-12)
    else:
        assert realized_epochs == pytest.approx(plan.epochs, rel=0.05)
    if toy.mixture.sources[source].packing == "concat" and last > 0:
        # the fractional last epoch is a prefix of that epoch's permutation
        perm = epoch_permutation(store.num_documents, 0, store.name, last)
        seen = [d for e, d, _ in reads if e == last]
        firsts = list(dict.fromkeys(seen))
        assert firsts == perm[:len(firsts)].tolist()


def test_epochs_are_reshuffled_independently():
    p = [epoch_permutation(1000, 0, "web", e) for e in range(3)]
    assert all(sorted(x.tolist()) == list(range(1000)) for x in p)
    assert not np.array_equal(p[0], p[1]) and not np.array_equal(p[1], p[2])
    assert not np.array_equal(p[0], epoch_permutation(1000, 0, "code", 0))
    assert not np.array_equal(p[0], epoch_permutation(1000, 1, "web", 0))
    np.testing.assert_array_equal(p[2], epoch_permutation(1000, 0, "web", 2))


def test_realized_token_fractions_match_the_plan(embedded):
    data = MixtureData(embedded, seq_len=256, global_batch_size=16)
    steps = 100
    counts = np.zeros(len(embedded.sources))
    for s in range(steps):
        batch = data.host_batch(s, provenance=True)
        np.add.at(counts, batch["source"], (batch["segment_ids"] > 0).sum(1))
    realized = counts / counts.sum()
    weights = np.array([embedded.stages[0].weights[s.name] for s in embedded.sources])
    np.testing.assert_allclose(realized, weights, rtol=0.005)


def test_best_fit_rows_keep_documents_whole(toy, all_batches):
    store = toy.stores[2]
    lengths = store.doc_lengths()
    for b in all_batches:
        for r in np.nonzero(b["source"] == 2)[0]:
            docs, pos = b["document"][r], b["doc_position"][r]
            for seg in range(1, b["segment_ids"][r].max() + 1):
                sel = b["segment_ids"][r] == seg
                d, start, n = docs[sel][0], pos[sel][0], sel.sum()
                assert start % T == 0  # pieces start at multiples of T within a document
                assert n == min(T, lengths[d] - start)  # whole document, or a full-T piece
    assert toy.layouts[2].fill() > 0.75


def test_global_stream_is_identical_for_1_2_4_hosts(toy_root):
    mixture = toy_mixture()
    streams = {}
    for hosts in (1, 2, 4):
        its = [build_iterator(mixture, seq_len=T, global_batch_size=B, data_root=toy_root,
                              process_index=h, process_count=hosts) for h in range(hosts)]
        streams[hosts] = [{k: np.concatenate([next(it)[k] for it in its]) for k in
                           ("tokens", "targets", "positions", "segment_ids", "loss_mask")}
                          for _ in range(6)]
    for hosts in (2, 4):
        for a, b in zip(streams[1], streams[hosts]):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])


def test_iterator_yields_the_planned_number_of_steps(toy_root, toy):
    it = build_iterator(toy_mixture(), seq_len=T, global_batch_size=B, data_root=toy_root,
                        process_index=0, process_count=1)
    batches = list(it)
    assert len(batches) == toy.num_steps == toy.plan.num_steps
    last = toy.host_batch(toy.num_steps - 1)
    np.testing.assert_array_equal(batches[-1]["tokens"], last["tokens"])


def test_stage_weights_change_at_the_boundary(toy_root):
    stages = (Stage({"a": 0.8, "b": 0.2}, fraction=0.5), Stage({"a": 0.2, "b": 0.8}, fraction=0.5))
    data = MixtureData(toy_mixture(stages=stages), seq_len=T, global_batch_size=10, num_steps=20,
                       data_root=toy_root)
    first = np.concatenate([data.host_batch(s, provenance=True)["source"] for s in range(10)])
    second = np.concatenate([data.host_batch(s, provenance=True)["source"] for s in range(10, 20)])
    assert np.bincount(first, minlength=4).tolist() == [80, 20, 0, 0]
    assert np.bincount(second, minlength=4).tolist() == [20, 80, 0, 0]
    assert data.plan.stage_steps == (10, 10)


def test_max_epochs_is_enforced(toy_root):
    mixture = toy_mixture()
    sources = tuple(s if s.name != "b" else s.__class__("b", "b", max_epochs=2.0)
                    for s in mixture.sources)
    with pytest.raises(MixturePlanError, match="source 'b'.*max_epochs 2.0"):
        MixtureData(mixture.replace(sources=sources), seq_len=T, global_batch_size=B,
                    data_root=toy_root)


def test_build_from_config_for_experiments(embedded):
    cache_dir = embedded.sources[0].path.rsplit("/", 2)[0]
    data = types.SimpleNamespace(mixture="embedded", seq_len=128, seed=0, cache_dir=cache_dir,
                                 data_root=None)
    it = build_from_config(data, global_batch_size=4, num_steps=10, process_index=0,
                           process_count=1)
    assert it.data.num_steps == 10 and it.data.mixture.name == "embedded"
    assert next(it)["tokens"].shape == (4, 128)
