"""Trie-packed scoring (`phi4_jax.inference.trie`), on a tiny random model (float32).

    python -m pytest -q tests/eval/test_trie.py

- `pack` lays out each distinct prefix once: node counts, depths, parents and the ancestor mask
  checked against hand-built tries; each predicting position once with its scored tokens;
- `trie_logprobs` gives every scored token the log-prob of its own whole row (`token_logprobs`)
  to 1e-5 nats, for rows packed across several passes, whatever the pass size;
- the model's explicit-mask path with a causal mask is the causal forward pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from phi4_jax.inference import trie
from phi4_jax.inference.scoring import token_logprobs

TOLERANCE = 1e-5  # nats per token: float32, a different order of the same sums


def rows_of(packed: trie.Packed) -> list[tuple[list[int], list[int], np.ndarray]]:
    """(tokens, positions, mask) of every real row, padding dropped."""
    return [(p.tokens[r, :n].tolist(), p.positions[r, :n].tolist(), p.mask[r, :n, :n])
            for p in packed.passes for r, n in enumerate(p.lengths) if n]


def test_each_distinct_prefix_is_one_node():
    seqs = [[5, 6, 7], [5, 6, 8, 9], [5, 6, 7], [5, 10], [5, 6]]  # a duplicate, a prefix
    packed = trie.pack(seqs, [2, 2, 1, 1, 1], rows_per_pass=1)
    assert packed.passes[0].nodes == 6  # 5, 6, 7, 8, 9, 10
    (tokens, positions, mask), = rows_of(packed)
    # sorted: [5, 6], [5, 6, 7] x2, [5, 6, 8, 9], [5, 10]
    assert tokens == [5, 6, 7, 8, 9, 10]
    assert positions == [0, 1, 2, 2, 3, 1]
    parent = [-1, 0, 1, 1, 3, 0]
    for n in range(6):  # each node sees itself and its ancestors, nothing else
        ancestors, a = {n}, parent[n]
        while a >= 0:
            ancestors.add(a)
            a = parent[a]
        assert set(np.flatnonzero(mask[n])) == ancestors
    # predicting positions: node 0 (-> 6, 10), node 1 (-> 7, 8), node 3 (-> 9); once each
    p = packed.passes[0]
    assert sorted(p.parents.tolist()) == [0, 1, 3]
    kids = {int(f): sorted(t for t in p.targets[i] if t >= 0) for i, f in enumerate(p.parents)}
    assert kids == {0: [6, 10], 1: [7, 8], 3: [9]}
    # each sequence reads its scored tokens back, in order
    for seq, start, (_, parent_slot, child_slot) in zip(seqs, [2, 2, 1, 1, 1], packed.reads):
        assert [int(p.targets[a, b]) for a, b in zip(parent_slot, child_slot)] == seq[start:]


def test_rows_fill_then_split_and_bad_input_is_named():
    seqs = [[1] * 40 + [k] * 60 for k in range(2, 6)]  # 100 tokens each, 40 shared
    packed = trie.pack(seqs, [40] * 4, rows_per_pass=3, row_len=128)
    # 100 + 60 > 128: every row holds one sequence; 4 rows in 2 passes of 3 rows
    assert [p.nodes for p in packed.passes] == [300, 100]
    assert packed.shape == trie.TrieShape(3, 128, trie.parent_bucket(180), 1)
    shared = trie.pack(seqs, [40] * 4, rows_per_pass=1, row_len=256)
    assert [p.nodes for p in shared.passes] == [40 + 3 * 60, 40 + 60]  # the 40 once per row
    with pytest.raises(ValueError, match="130 tokens does not fit rows of 128"):
        trie.pack([[1] * 130], [1], rows_per_pass=1, row_len=128)
    with pytest.raises(ValueError, match="start"):
        trie.pack([[1, 2]], [0], rows_per_pass=1)
    assert trie.row_length(23) == 128 and trie.row_length(300) == 640  # two of them


@pytest.fixture(scope="module")
def model():
    from phi4_jax.model import init_model
    from phi4_jax.model.config import preset

    return init_model(preset("tiny", dtype="float32", vocab_size=258, init_std=0.1,
                             max_seq_len=512), seed=0)


def test_trie_logprobs_equal_whole_rows(model):
    rng = np.random.default_rng(0)
    ids = lambda n: rng.integers(2, 258, n).tolist()
    shots = ids(40)  # a few-shot prefix every question shares
    seqs, starts = [], []
    for _ in range(12):
        context = shots + ids(int(rng.integers(3, 20)))
        first = ids(2)
        for c in range(int(rng.integers(2, 5))):
            choice = first + ids(int(rng.integers(0, 4))) if c % 2 else ids(int(rng.integers(1, 6)))
            seqs.append(context + choice)
            starts.append(len(context))
    seqs.append(seqs[0])  # a duplicate
    starts.append(starts[0])
    seqs.append(seqs[1][:starts[1] + 1])  # another's context and first choice token
    starts.append(starts[1])
    whole = [np.asarray(token_logprobs(model, [s]))[0, st:] for s, st in zip(seqs, starts)]
    results = {}
    for rows in (1, 4):  # 12 questions over several 128-token rows and passes
        got = trie.trie_logprobs(model, seqs, starts, rows_per_pass=rows, row_len=128)
        for g, w in zip(got, whole):
            np.testing.assert_allclose(g, w, atol=TOLERANCE, rtol=0)
        results[rows] = got
    diff = max(float(np.abs(a - b).max()) for a, b in zip(results[1], results[4]))
    packed = trie.pack(seqs, starts, rows_per_pass=4, row_len=128)
    nodes = sum(p.nodes for p in packed.passes)
    print(f"{len(seqs)} rows, {sum(map(len, seqs))} tokens -> {nodes} nodes in "
          f"{len(packed.passes)} passes; rows per pass 1 vs 4: {diff:.1e}")
    assert nodes < sum(map(len, seqs)) // 3  # the shared prefix runs once per row


def test_explicit_causal_mask_is_the_causal_pass(model):
    rng = np.random.default_rng(1)
    tokens = rng.integers(2, 258, (2, 16))
    causal = np.broadcast_to(np.tril(np.ones((16, 16), bool)), (2, 16, 16))
    positions = np.broadcast_to(np.arange(16), (2, 16))
    np.testing.assert_allclose(model.hidden(tokens, positions, mask=causal),
                               model.hidden(tokens), atol=1e-5, rtol=0)
