"""Hashed word n-grams of benchmark items, and the scan of one document against them.

Phi-4's decontamination is a hybrid n-gram match (7- to 13-grams). Passes here:

    (13, "all")    13-grams of every item with at least 13 words
    (7, "short")   7-grams of the items shorter than the longest n (too short for 13-grams)

`(n, "all")` indexes every item with >= n words, `(n, "short")` only those shorter than the
largest n of the passes; an item shorter than every n is counted `too_short` and never matches.

Speed: words are mapped to ids of the benchmark vocabulary (a word no benchmark has cannot be
in a matching n-gram: its windows are skipped), the n-gram hashes of a document are computed in
numpy as a sum of id x odd 64-bit constants (wrapping), looked up in a sorted array with
`searchsorted`, and each hit is verified word by word against the item (no false positive from
a hash collision).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from phi4_jax.curate.benchmarks import BenchItem
from phi4_jax.curate.text import words

DEFAULT_PASSES: tuple[tuple[int, str], ...] = ((13, "all"), (7, "short"))


def _multipliers(n: int) -> np.ndarray:
    """n odd 64-bit constants (splitmix64 of 1..n): fixed, so hashes are the same anywhere."""
    out, x = [], 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for i in range(1, n + 1):
        z = (x * i) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append((z ^ (z >> 31)) | 1)
    return np.array(out, dtype=np.uint64)


def window_hashes(ids: np.ndarray, n: int, mult: np.ndarray) -> np.ndarray:
    """The hash of every n-word window of `ids` (uint64, len(ids) - n + 1 of them)."""
    count = len(ids) - n + 1
    h = np.zeros(count, dtype=np.uint64)
    u = ids.astype(np.uint64) + np.uint64(1)
    for k in range(n):
        h += u[k:k + count] * mult[k]
    return h


@dataclasses.dataclass(frozen=True)
class Match:
    benchmark: str
    item_id: str
    n: int
    ngram: str  # the normalized words
    position: int  # word offset in the document
    count: int  # matching windows of this item in the document

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class NGramIndex:
    """The n-grams of benchmark items, per pass (module docstring)."""

    def __init__(self, items: Sequence[BenchItem],
                 passes: Sequence[tuple[int, str]] = DEFAULT_PASSES):
        passes = [(int(n), str(scope)) for n, scope in passes]
        if not passes or any(n < 1 or s not in ("all", "short") for n, s in passes):
            raise ValueError(f"passes {passes}: each is (n >= 1, 'all' | 'short')")
        self.items, self.passes = list(items), passes
        self.vocab: dict[str, int] = {}
        self.item_ids: list[np.ndarray] = []
        self.item_words: list[list[str]] = []
        longest, shortest = max(n for n, _ in passes), min(n for n, _ in passes)
        self.stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        # n -> (sorted hashes, hash -> [(item index, start)], multipliers)
        self.tables: dict[int, tuple[np.ndarray, dict[int, list[tuple[int, int]]], np.ndarray]] = {}
        entries: dict[int, dict[int, list[tuple[int, int]]]] = {n: {} for n, _ in passes}
        for index, item in enumerate(self.items):
            toks = words(item.text)
            ids = np.array([self.vocab.setdefault(t, len(self.vocab)) for t in toks], np.int64)
            self.item_ids.append(ids)
            self.item_words.append(toks)
            stats = self.stats[item.benchmark]
            stats["items"] += 1
            if len(toks) < shortest:
                stats["too_short"] += 1
            for n, scope in passes:
                if len(toks) < n or (scope == "short" and len(toks) >= longest):
                    continue
                stats[f"indexed_{n}"] += 1
                table = entries[n]
                seen = set()
                for start, h in enumerate(window_hashes(ids, n, _multipliers(n)).tolist()):
                    if h not in seen:
                        seen.add(h)
                        table.setdefault(h, []).append((index, start))
        for n, table in entries.items():
            keys = np.array(sorted(table), dtype=np.uint64)
            self.tables[n] = (keys, table, _multipliers(n))
            for refs in table.values():
                for b in {self.items[i].benchmark for i, _ in refs}:
                    self.stats[b][f"ngrams_{n}"] += 1

    def scan(self, text: str) -> list[Match]:
        """Every benchmark item that shares an indexed n-gram with `text` (one Match per item,
        its first n-gram; the longest n first)."""
        toks = words(text)
        get = self.vocab.get
        ids = np.array([get(t, -1) for t in toks], dtype=np.int64)
        if len(ids) == 0:
            return []
        unknown = np.concatenate([[0], np.cumsum(ids < 0)])
        found: dict[int, Match] = {}
        for n in sorted(self.tables, reverse=True):
            keys, table, mult = self.tables[n]
            if len(ids) < n or len(keys) == 0:
                continue
            valid = np.flatnonzero(unknown[n:] == unknown[:-n])
            if len(valid) == 0:
                continue
            h = window_hashes(ids, n, mult)[valid]
            at = np.minimum(np.searchsorted(keys, h), len(keys) - 1)
            for pos, key in zip(valid[keys[at] == h].tolist(), h[keys[at] == h].tolist()):
                window = ids[pos:pos + n]
                for item, start in table[key]:
                    if not np.array_equal(self.item_ids[item][start:start + n], window):
                        continue  # a hash collision
                    if item in found:
                        m = found[item]
                        if m.n == n:
                            found[item] = dataclasses.replace(m, count=m.count + 1)
                        continue
                    found[item] = Match(self.items[item].benchmark, self.items[item].item_id,
                                        n, " ".join(toks[pos:pos + n]), pos, 1)
        return sorted(found.values(), key=lambda m: (m.position, m.benchmark, m.item_id))
