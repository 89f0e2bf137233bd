"""Per-source row layouts: which document spans fill a source's r-th row, as a pure function of r.

Each source is read epoch after epoch; epoch e visits the documents in their own permutation,
seeded by (seed, source name, e), independent of every other source and epoch. Two layouts:

- concat (pretraining): the source is one stream, epoch 0's permuted documents, then epoch 1's,
  and so on; row r is stream tokens [r * T, (r + 1) * T). A row never repeats within an epoch,
  documents longer than a row continue in the source's next row, and reading R rows reads
  exactly R * T / unique_tokens epochs (the last one a deterministic prefix of its permutation).
- best_fit (SFT, long context): each epoch's documents, in permuted order, are cut into pieces
  of at most T tokens and packed best-fit-decreasing into rows, window by window; rows are then
  shuffled within their window. Rows hold whole documents (up to T) plus padding.

Only document lengths are needed to lay rows out, so every host computes the same layout and
gathers just its own rows' tokens (phi4_jax.data.packing).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import hashlib
import threading

import numpy as np

from phi4_jax.data.store import StoreReader, open_store, read_manifest


@dataclasses.dataclass
class Pieces:
    """Document spans placed in rows: row k of the request holds tokens [start, start + length)
    of `doc` at slot `dst`; `epoch` is provenance. Sorted by (row, dst)."""

    row: np.ndarray
    dst: np.ndarray
    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray
    epoch: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[Pieces]) -> Pieces:
        fields = [f.name for f in dataclasses.fields(cls)]
        if not parts:
            return cls(*(np.zeros(0, np.int64) for _ in fields))
        merged = cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))
        order = np.lexsort((merged.dst, merged.row))
        return cls(*(getattr(merged, f)[order] for f in fields))


def name_key(name: str) -> list[int]:
    """A stable 64-bit key for a source name, as two 32-bit words (independent of source order)."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return [digest & 0xFFFFFFFF, digest >> 32]


def epoch_permutation(num_docs: int, seed: int, name: str, epoch: int) -> np.ndarray:
    """The document order of `epoch` for source `name`: argsort of PCG64 raw draws.

    Raw bit-generator streams are stable across numpy versions (Generator.permutation is not
    guaranteed to be), so the order is reproducible across machines and upgrades.
    """
    bits = np.random.PCG64(np.random.SeedSequence([seed, *name_key(name), epoch]))
    return np.argsort(bits.random_raw(num_docs), kind="stable").astype(np.int64)


class _EpochCache:
    def __init__(self, build, size: int = 3):
        self._build, self._size = build, size
        self._items: collections.OrderedDict[int, object] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, epoch: int):
        with self._lock:
            if epoch in self._items:
                self._items.move_to_end(epoch)
                return self._items[epoch]
            value = self._build(epoch)
            self._items[epoch] = value
            if len(self._items) > self._size:
                self._items.popitem(last=False)
            return value


class _Layout:
    """A source's layout: its store, document lengths and unique tokens. A subclass lays out
    one epoch (`_build_epoch`, cached here) and answers `fill()` and `pieces(rows)`."""

    packing: str

    def __init__(self, store: StoreReader, seq_len: int, seed: int, name: str | None = None,
                 docs: np.ndarray | None = None):
        self.store, self.seq_len, self.seed = store, seq_len, seed
        self.name = name or store.name
        # `docs`: the store's documents this layout reads (a held-out slice excluded); the
        # layout permutes and packs positions into it, `_global` maps them back to documents.
        self.docs = None if docs is None else np.asarray(docs, np.int64)
        lengths = store.doc_lengths()
        self.lengths = lengths if self.docs is None else lengths[self.docs]
        self.unique_tokens = int(store.num_tokens if self.docs is None else self.lengths.sum())
        if self.unique_tokens == 0:
            raise ValueError(f"source {self.name!r}: store {store.path} is empty")
        self._epoch = _EpochCache(self._build_epoch)

    def _build_epoch(self, epoch: int) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def _global(self, local: np.ndarray) -> np.ndarray:
        return local if self.docs is None else self.docs[local]


class ConcatLayout(_Layout):
    packing = "concat"

    def _build_epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        perm = epoch_permutation(len(self.lengths), self.seed, self.name, epoch)
        cum = np.concatenate([[0], np.cumsum(self.lengths[perm])])
        return self._global(perm), cum

    def fill(self) -> float:
        return 1.0

    def pieces(self, rows: np.ndarray) -> Pieces:
        t, u = self.seq_len, self.unique_tokens
        rows = np.asarray(rows, np.int64)
        start = rows * t
        first, last = start // u, (start + t - 1) // u
        # Split each row's stream interval at epoch boundaries.
        count = last - first + 1
        owner = np.repeat(np.arange(len(rows)), count)
        ramp = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
        epoch = first[owner] + ramp
        lo = np.maximum(start[owner], epoch * u)
        hi = np.minimum(start[owner] + t, (epoch + 1) * u)
        parts = []
        for e in np.unique(epoch):
            sel = epoch == e
            perm, cum = self._epoch(int(e))
            q_lo, q_hi = lo[sel] - e * u, hi[sel] - e * u
            k_lo = np.searchsorted(cum, q_lo, side="right") - 1
            k_hi = np.searchsorted(cum, q_hi - 1, side="right") - 1
            n = k_hi - k_lo + 1
            k = np.repeat(k_lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            p_lo = np.maximum(np.repeat(q_lo, n), cum[k])
            p_hi = np.minimum(np.repeat(q_hi, n), cum[k + 1])
            parts.append(Pieces(row=np.repeat(owner[sel], n),
                                dst=np.repeat(lo[sel] - start[owner[sel]], n) + p_lo
                                - np.repeat(q_lo, n),
                                doc=perm[k], start=p_lo - cum[k], length=p_hi - p_lo,
                                epoch=np.full(k.size, e, np.int64)))
        return Pieces.concatenate(parts)


def best_fit(lengths: np.ndarray, capacity: int, max_items: int | None = None
             ) -> list[list[int]]:
    """Best-fit-decreasing: bins (lists of indices into `lengths`) of total <= capacity and, if
    `max_items` is set, of at most that many items (DPO rows: pairs per row)."""
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, bin id)
    bins: list[list[int]] = []
    for i in order:
        size = int(lengths[i])
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            remaining, b = free.pop(at)
        else:
            remaining, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if remaining - size > 0 and (max_items is None or len(bins[b]) < max_items):
            bisect.insort(free, (remaining - size, b))
    return bins


class BestFitLayout(_Layout):
    packing = "best_fit"

    def __init__(self, store: StoreReader, seq_len: int, seed: int, name: str | None = None,
                 window: int = 2048, docs: np.ndarray | None = None):
        super().__init__(store, seq_len, seed, name, docs)
        self.window = window
        self._row_starts = [0]  # cumulative rows per epoch, extended on demand
        self._lock = threading.Lock()

    def _build_epoch(self, epoch: int) -> tuple[np.ndarray, ...]:
        t = self.seq_len
        perm = epoch_permutation(len(self.lengths), self.seed, self.name, epoch)
        lens = self.lengths[perm]
        n_pieces = -(-lens // t)
        doc = np.repeat(perm, n_pieces)
        ramp = np.arange(doc.size) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
        start = ramp * t
        length = np.minimum(np.repeat(lens, n_pieces) - start, t)
        rng = np.random.default_rng([self.seed, *name_key(self.name), epoch, 1])
        rows: list[list[int]] = []
        for w0 in range(0, doc.size, self.window):
            bins = best_fit(length[w0:w0 + self.window], t)
            for b in rng.permutation(len(bins)):
                rows.append([w0 + i for i in bins[b]])
        flat = np.fromiter((i for r in rows for i in r), np.int64, count=doc.size)
        row_ptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
        return self._global(doc[flat]), start[flat], length[flat], row_ptr

    def epoch_rows(self, epoch: int) -> int:
        return len(self._epoch(epoch)[3]) - 1

    def fill(self) -> float:
        """Non-padding share of epoch 0's rows (the mixture plan's rows-per-token factor)."""
        return self.unique_tokens / (self.epoch_rows(0) * self.seq_len)

    def _locate(self, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            need = int(rows.max()) if rows.size else -1
            while self._row_starts[-1] <= need:
                self._row_starts.append(self._row_starts[-1]
                                        + self.epoch_rows(len(self._row_starts) - 1))
            starts = np.asarray(self._row_starts, np.int64)
        return np.searchsorted(starts, rows, side="right") - 1

    def pieces(self, rows: np.ndarray) -> Pieces:
        rows = np.asarray(rows, np.int64)
        epochs = self._locate(rows)
        parts = []
        for e in np.unique(epochs):
            sel = np.nonzero(epochs == e)[0]
            doc, start, length, row_ptr = self._epoch(int(e))
            local = rows[sel] - self._row_starts[e]
            n = row_ptr[local + 1] - row_ptr[local]
            idx = np.repeat(row_ptr[local], n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            lens = length[idx]
            before = np.cumsum(lens) - lens  # tokens before each piece, reset per row below
            row_first = np.repeat(np.cumsum(n) - n, n)
            dst = before - before[row_first] if idx.size else before
            parts.append(Pieces(row=np.repeat(sel, n), dst=dst, doc=doc[idx], start=start[idx],
                                length=lens, epoch=np.full(idx.size, e, np.int64)))
        return Pieces.concatenate(parts)


def make_layout(store: StoreReader, packing: str, seq_len: int, seed: int, name: str,
                window: int = 2048, docs: np.ndarray | None = None
                ) -> ConcatLayout | BestFitLayout:
    """`docs`: the documents to lay out (default: all of the store's)."""
    if packing == "concat":
        return ConcatLayout(store, seq_len, seed, name, docs)
    if packing == "best_fit":
        return BestFitLayout(store, seq_len, seed, name, window, docs)
    raise ValueError(f"source {name!r}: unknown packing {packing!r}")


def measure_sources(mixture, seq_len: int | None, seed: int = 0
                    ) -> tuple[dict[str, float], dict[str, float] | None]:
    """Unique tokens from each source's manifest and, given seq_len, best-fit fill factors (a
    concat source's is 1; a best-fit source's needs its document lengths: the offsets)."""
    unique, fills = {}, {}
    for s in mixture.sources:
        unique[s.name] = float(read_manifest(s.path).num_tokens)
        if seq_len is not None:
            fills[s.name] = 1.0 if s.packing == "concat" else make_layout(
                open_store(s.path), s.packing, seq_len, seed, s.name).fill()
    return unique, (fills if seq_len is not None else None)
