"""Scoring many sequences that share prefixes: each distinct prefix runs through the model once.

    trie_logprobs(model, sequences, starts, rows_per_pass=4)
        # [log p(seq[j] | seq[:j]) for j >= starts[i]] per sequence, float32 numpy

The sequences are sorted and inserted into tries, one trie per packed row of `row_len` tokens:
a node is a distinct prefix (its token at position = depth), and a node attends to itself and
its ancestors only (`Transformer.hidden(..., mask=)`). A multiple-choice question is its context
once plus each choice's distinct tokens (" 150" and " 148" share " " and "1"), and neighbouring
questions in sorted order share their opening words ("Question: What is"), and a few-shot prompt
is run once per row for every question in it. Only the positions that predict a scored token are
projected onto the vocabulary, each once however many scored tokens it predicts.

Mathematically every scored token gets the log-prob of its own whole row: the same tokens at the
same positions, attending to the same keys (masked keys get exactly zero weight). In float32 the
results differ from whole rows by rounding only (a different order of the same sums).

One compiled program per `TrieShape`; `pack` builds the passes (numpy) and `run_pass` runs one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi4_jax.model import Transformer

ROW_MIN = 128  # the shortest packed row: short sequences share a row (and its prefixes)
_PICK_CHUNK = 512  # predicting positions projected onto the vocabulary at a time


class TrieShape(NamedTuple):
    """A pass's padded program shape: rows [rows, row_len], `parents` predicting positions, each
    with at most `children` scored next tokens."""

    rows: int
    row_len: int
    parents: int
    children: int


class Pass(NamedTuple):
    """One pass's inputs (numpy, unpadded in the parent dimension; `run_pass` pads them).

    tokens, positions: int32 [rows, row_len];
    ends: int32 [rows, row_len]: one past the last node of each node's subtree. Sorted
        sequences go in in depth-first order, so a subtree is the nodes [n, ends[n]) and node i
        attends to node j exactly when j <= i < ends[j] (`mask`); padding: itself only;
    parents: int32 [P]: flat index row * row_len + node of each predicting position;
    targets: int32 [P, K]: the tokens it is scored on (padding -1);
    lengths: int32 [rows]: each row's real nodes (the rest is padding).
    """

    tokens: np.ndarray
    positions: np.ndarray
    ends: np.ndarray
    parents: np.ndarray
    targets: np.ndarray
    lengths: np.ndarray

    @property
    def nodes(self) -> int:
        """Real nodes in the pass: each one token's pass through the blocks."""
        return int(self.lengths.sum())

    @property
    def mask(self) -> np.ndarray:
        """bool [rows, row_len, row_len]: node i attends to node j (itself and its ancestors)."""
        return tree_mask(np, self.ends)


def tree_mask(xp, ends):
    """[rows, T, T] attention mask of depth-first laid-out tries from their subtree ends
    [rows, T]: query i sees key j when j <= i < ends[j]. `xp`: numpy or jax.numpy."""
    index = xp.arange(ends.shape[-1])
    query, key = index[None, :, None], index[None, None, :]
    return (key <= query) & (query < ends[:, None, :])


class Packed(NamedTuple):
    """`pack`'s result: the passes (all of `shape`) and where each sequence's scores are: for
    sequence i, reads[i] = (pass, parent slot [n], child slot [n]) of its n scored tokens."""

    passes: list[Pass]
    shape: TrieShape
    reads: list[tuple[int, np.ndarray, np.ndarray]]


def _to_eighth(n: int, smallest_step: int) -> int:
    """n rounded up to a multiple of 1/8 of its power of two (at most an eighth of padding),
    the step at least `smallest_step`."""
    step = max(smallest_step, 1 << max((n - 1).bit_length() - 3, 0))
    return -(-n // step) * step


def row_length(longest: int) -> int:
    """The packed row length for sequences up to `longest` tokens: room for two of them (so
    questions that share a long few-shot prompt share it in a row), at least `ROW_MIN`, rounded
    up to an eighth of its power of two."""
    return _to_eighth(max(2 * int(longest), ROW_MIN), 16)


def parent_bucket(n: int) -> int:
    """Predicting positions per pass pad to an eighth of their power of two (at least 8)."""
    return _to_eighth(max(int(n), 8), 8)


def pack(sequences: Sequence[Sequence[int]], starts: Sequence[int], *, rows_per_pass: int,
         row_len: int | None = None, shape: TrieShape | None = None) -> Packed:
    """Sorted sequences into tries of at most `row_len` nodes (default `row_length` of the
    longest), `rows_per_pass` rows a pass. Sequence i is scored from token starts[i] >= 1 on.
    The program shape is the largest this input needs, or `shape` where that is larger."""
    if len(starts) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(starts)} starts")
    seqs = [tuple(int(t) for t in s) for s in sequences]
    if any(not 1 <= int(s) <= len(q) for s, q in zip(starts, seqs)):
        raise ValueError("every sequence needs a first token to condition on and a start "
                         "in 1..len(sequence)")
    longest = max((len(s) for s in seqs), default=1)
    row_len = row_length(longest) if row_len is None else int(row_len)
    if longest > row_len:
        raise ValueError(f"a sequence of {longest} tokens does not fit rows of {row_len}")
    rows: list[tuple[list[int], list[int], list[int]]] = []  # tokens, depth, parent per node
    nodes: list[tuple[int, list[int]] | None] = [None] * len(seqs)  # (row, scored nodes)
    path: list[int] = []  # node ids of the previous sequence's tokens in the current row
    prev: tuple[int, ...] = ()
    for i in sorted(range(len(seqs)), key=lambda i: seqs[i]):
        seq = seqs[i]
        shared = 0
        while shared < min(len(prev), len(seq)) and prev[shared] == seq[shared]:
            shared += 1  # sorted order: the previous sequence shares the longest prefix
        if not rows or len(rows[-1][0]) + len(seq) - shared > row_len:
            rows.append(([], [], []))
            shared, path = 0, []
        tokens, depth, parent = rows[-1]
        del path[shared:]
        for j in range(shared, len(seq)):
            parent.append(path[-1] if path else -1)
            path.append(len(tokens))
            tokens.append(seq[j])
            depth.append(j)
        nodes[i] = (len(rows) - 1, path[int(starts[i]):])
        prev = seq

    b = max(int(rows_per_pass), 1)
    passes_rows = [rows[k:k + b] for k in range(0, len(rows), b)]
    # Predicting positions of each pass, once each: flat parent -> {scored child: target slot}.
    children: list[dict[int, dict[int, int]]] = [{} for _ in passes_rows]
    for r, scored in nodes:  # type: ignore[misc]
        k, within = divmod(r, b)
        parent = rows[r][2]
        for n in scored:
            flat = within * row_len + parent[n]
            slots = children[k].setdefault(flat, {})
            slots.setdefault(n, len(slots))
    need = TrieShape(b, row_len, parent_bucket(max((len(c) for c in children), default=1)),
                     max((len(s) for c in children for s in c.values()), default=1))
    if shape is not None:
        need = TrieShape(*map(max, zip(need, shape)))
    if need.rows != b or need.row_len != row_len:
        return pack(sequences, starts, rows_per_pass=need.rows, row_len=need.row_len,
                    shape=need)

    passes = []
    for chunk, kids in zip(passes_rows, children):
        tokens = np.zeros((b, row_len), np.int32)
        positions = np.zeros((b, row_len), np.int32)
        ends = np.broadcast_to(np.arange(1, row_len + 1, dtype=np.int32), (b, row_len)).copy()
        for r, (toks, depth, parent) in enumerate(chunk):
            tokens[r, :len(toks)] = toks
            positions[r, :len(toks)] = depth
            for n in range(len(toks) - 1, 0, -1):  # children after parents: a reverse sweep
                if parent[n] >= 0:
                    ends[r, parent[n]] = max(ends[r, parent[n]], ends[r, n])
        parents = np.array(sorted(kids), np.int32)
        targets = np.full((len(parents), need.children), -1, np.int32)
        for row_index, flat in enumerate(parents):
            r = flat // row_len
            for n, slot in kids[flat].items():
                targets[row_index, slot] = chunk[r][0][n]
        lengths = np.zeros(b, np.int32)
        lengths[:len(chunk)] = [len(toks) for toks, _, _ in chunk]
        passes.append(Pass(tokens, positions, ends, parents, targets, lengths))

    slot_of = [{int(f): s for s, f in enumerate(p.parents)} for p in passes]
    reads = []
    for r, scored in nodes:  # type: ignore[misc]
        k, within = divmod(r, b)
        parent = rows[r][2]
        flat = [within * row_len + parent[n] for n in scored]
        reads.append((k, np.array([slot_of[k][f] for f in flat], np.int32),
                      np.array([children[k][f][n] for f, n in zip(flat, scored)], np.int32)))
    return Packed(passes, need, reads)


def run_pass(model: Transformer, p: Pass, shape: TrieShape) -> np.ndarray:
    """Log-probs [P, K] of each predicting position's targets (float32 numpy, P unpadded)."""
    parents = np.zeros(shape.parents, np.int32)
    parents[:len(p.parents)] = p.parents
    targets = np.zeros((shape.parents, shape.children), np.int32)
    targets[:len(p.targets), :p.targets.shape[1]] = np.maximum(p.targets, 0)
    graphdef, state = nnx.split(model)
    out = _trie_jit(graphdef, state, p.tokens, p.positions, p.ends, parents, targets)
    return np.asarray(out)[:len(p.parents)]


def trie_logprobs(model: Transformer, sequences: Sequence[Sequence[int]],
                  starts: Sequence[int], *, rows_per_pass: int = 4,
                  row_len: int | None = None) -> list[np.ndarray]:
    """out[i][j] = log p(seq_i[starts[i] + j] | seq_i[:starts[i] + j]), float32 numpy, each
    distinct prefix of the sequences run through the model once (see the module docstring)."""
    packed = pack(sequences, starts, rows_per_pass=rows_per_pass, row_len=row_len)
    results = [run_pass(model, p, packed.shape) for p in packed.passes]
    return [results[k][parent, child] for k, parent, child in packed.reads]


@functools.partial(jax.jit, static_argnums=(0,))
def _trie_jit(graphdef, state, tokens, positions, ends, parents, targets):
    model = nnx.merge(graphdef, state)
    hidden = model.hidden(tokens, positions, mask=tree_mask(jnp, ends))  # [B, T, D]
    h = hidden.reshape(-1, hidden.shape[-1])[parents]  # [P, D]
    p, k = targets.shape
    chunk = min(_PICK_CHUNK, p)
    pad = -p % chunk
    hs = jnp.pad(h, ((0, pad), (0, 0))).reshape(-1, 1, chunk, h.shape[-1])
    ys = jnp.pad(targets, ((0, pad), (0, 0))).reshape(-1, chunk, k)

    def one(args):
        h, y = args
        logits = model.logits(h)[0]  # [chunk, V]
        picked = jnp.take_along_axis(logits, y, axis=-1)
        return picked - jax.nn.logsumexp(logits, axis=-1, keepdims=True)

    return jax.lax.map(one, (hs, ys)).reshape(-1, k)[:p]
