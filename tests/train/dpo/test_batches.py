"""DPO pair batches: reading and counting, packing, per-epoch shuffles, exact resume, hosts,
the plan command."""

import json

import numpy as np
import pytest

from phi4_jax.data.row_layout import best_fit
from phi4_jax.posttrain.records import pairs_fingerprint
from phi4_jax.train.dpo import batches
from tests.train.dpo.conftest import synthetic_pairs, write_pairs


@pytest.fixture
def pairs(tmp_path):
    return batches.load_pairs(write_pairs(tmp_path / "p.jsonl", synthetic_pairs(
        37, completion_lengths=(1, 5, 3))), vocab_size=256, seq_len=32)


def test_reading_counts_what_it_skips_and_keeps_ids_exactly(tmp_path):
    good = synthetic_pairs(5, completion_lengths=(1, 5))
    long = synthetic_pairs(1, seed=9)[0]
    long = type(long)("long", tuple(range(1, 20)), (1,), (2,), "pts", "synthetic")
    path = write_pairs(tmp_path / "a.jsonl", [*good, long])
    with open(path, "a") as f:
        f.write("{not json\n")
        f.write(json.dumps({**good[0].to_json(), "id": "x", "chosen_ids": [999]}) + "\n")
        f.write(json.dumps({**good[1].to_json(), "id": "t", "tokenizer": "other"}) + "\n")
    pairs = batches.load_pairs(path, vocab_size=256, seq_len=32, tokenizer="synthetic")
    assert pairs.names == [p.id for p in good]
    assert pairs.fingerprint == pairs_fingerprint(good)
    for i, p in enumerate(good):
        assert [tuple(x) for x in pairs.parts(i)] == [p.prompt_ids, p.chosen_ids, p.rejected_ids]
    report = pairs.report
    assert report["skipped"] == {"too_long": 1, "tokenizer": 1}  # 2 x 19 + 1 + 1 - 2 > 32
    assert report["malformed"] == {"invalid JSON": 1, "chosen_ids": 1}
    with pytest.raises(ValueError, match="mixes tokenizers"):
        batches.load_pairs(path, vocab_size=256, seq_len=32)


def test_each_epoch_packs_every_pair_once_in_its_own_order(pairs):
    lengths = pairs.row_lengths()
    orders = []
    for epoch in range(3):
        rows = batches.layout(pairs, seq_len=32, max_pairs_per_row=3, seed=1, epoch=epoch,
                                window=16)
        flat = np.concatenate(rows)
        assert sorted(flat) == list(range(len(pairs)))
        assert all(len(r) <= 3 and lengths[r].sum() <= 32 for r in rows)
        orders.append(flat)
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    again = batches.layout(pairs, seq_len=32, max_pairs_per_row=3, seed=1, epoch=1, window=16)
    np.testing.assert_array_equal(np.concatenate(again), orders[1])


def test_resume_is_exact_and_hosts_split_the_global_batch(pairs):
    kwargs = dict(seq_len=32, global_batch=4, seed=2, max_pairs_per_row=4)
    run = batches.PairIterator(pairs, **kwargs)
    stream = [next(run) for _ in range(12)]  # several epochs
    resumed = batches.PairIterator(pairs, **kwargs)
    state = json.loads(json.dumps(run.get_state()))
    run2 = batches.PairIterator(pairs, **kwargs)
    for _ in range(5):
        next(run2)
    resumed.set_state(json.loads(json.dumps(run2.get_state())))
    for expected in stream[5:]:
        got = next(resumed)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])
    assert state["step"] == 12
    halves = [batches.PairIterator(pairs, **kwargs, host=h, host_count=2) for h in range(2)]
    for step in range(6):
        parts = [h.batch(step) for h in halves]
        for k in stream[step]:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), stream[step][k])


def test_restoring_a_different_stream_is_refused(pairs):
    state = batches.PairIterator(pairs, seq_len=32, global_batch=4).get_state()
    other = batches.PairIterator(pairs, seq_len=32, global_batch=4, seed=5)
    with pytest.raises(ValueError, match="seed: checkpoint 0 != now 5"):
        other.set_state(state)
    state["fingerprint"] = "0" * 64
    with pytest.raises(ValueError, match="fingerprint"):
        batches.PairIterator(pairs, seq_len=32, global_batch=4).set_state(state)


def test_rows_are_best_fit_with_a_pair_limit():
    lengths = np.array([9, 3, 3, 3, 3, 7, 1])
    assert best_fit(lengths, 10) == [[0, 6], [5, 1], [2, 3, 4]]
    assert best_fit(lengths, 10, max_items=2) == [[0, 6], [5, 1], [2, 3], [4]]


def test_plan_cli_prints_steps(pairs, tmp_path, capsys):
    path = write_pairs(tmp_path / "q.jsonl", synthetic_pairs(20))
    batches.main(["plan", "--pairs", path, "--seq_len", "32", "--global_batch", "4",
                  "--vocab_size", "256", "--epochs", "2"])
    out = capsys.readouterr().out
    assert "20 pairs ->" in out and "train.steps for 2 epochs:" in out
