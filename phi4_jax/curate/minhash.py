"""Near-duplicate clusters by MinHash LSH (datasketch signatures), with a deterministic
representative per cluster.

    config = MinHashConfig()                       # 5-word shingles, 14 bands x 8 rows
    clusters = near_duplicates({"a": text_a, "b": text_b, ...}, config)
    kept = {doc_id for doc_id in ids if clusters.representative(doc_id) == doc_id}

Defaults and why: 5-word shingles of the normalized words (phi4_jax.curate.text) and 14 bands of
8 rows (112 permutations), FineWeb's setting: two documents land in one bucket of some band with
probability 1 - (1 - J^8)^14 for Jaccard J of their shingle sets: 0.92 at J=0.8, 0.50 at
J~0.72, 0.04 at J=0.5. Shingles are hashed with crc32 (deterministic in every process, unlike
Python's `hash`; datasketch's default sha1 costs twice as much) and the datasketch MinHash of
each document reuses one set of permutations (seed 1).

Clusters: every pair of documents that share a band key is an edge; clusters are the connected
components (union-find), and the representative kept of each is its smallest id (string order),
whatever the order the documents arrived in. The Beam path (phi4_jax.curate.dedup_beam) computes
the same band keys and the same components.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from datasketch import MinHash

from phi4_jax.curate.text import shingles, words

SCHEME = "affine32"  # datasketch 2's default permutation scheme, named: signatures must agree


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    def collision_probability(self, jaccard: float) -> float:
        return 1.0 - (1.0 - jaccard ** self.rows) ** self.bands


DEFAULT = MinHashConfig()


def _crc32(data: bytes) -> int:
    return zlib.crc32(data)


_PERMUTATIONS: dict[tuple[int, int], object] = {}


def _template(config: MinHashConfig) -> MinHash:
    key = (config.num_perm, config.seed)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS[key] = MinHash(num_perm=config.num_perm, seed=config.seed,
                                     hashfunc=_crc32, scheme=SCHEME).permutations
    return MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=_crc32,
                   permutations=_PERMUTATIONS[key], scheme=SCHEME)


def signature(text: str, config: MinHashConfig) -> np.ndarray:
    """The MinHash signature (num_perm values) of the text's shingle set."""
    m = _template(config)
    m.update_batch({s.encode() for s in shingles(words(text), config.ngram)})
    return m.hashvalues


def band_keys(sig: np.ndarray, config: MinHashConfig) -> list[bytes]:
    """One key per band: the band's index and its rows' values (16-byte digest)."""
    raw = np.ascontiguousarray(sig).tobytes()
    step = len(raw) // config.bands
    return [hashlib.blake2b(bytes([b]) + raw[b * step:(b + 1) * step], digest_size=16).digest()
            for b in range(config.bands)]


def doc_band_keys(doc_id: str, text: str, config: MinHashConfig) -> Iterator[tuple[bytes, str]]:
    for key in band_keys(signature(text, config), config):
        yield key, doc_id


def bucket_edges(members: Iterable[str]) -> list[tuple[str, str]]:
    """The edges of one bucket: its smallest id to each other member (a star spans it)."""
    members = sorted(set(members))
    return [(members[0], other) for other in members[1:]]


class UnionFind:
    """Components of string ids; find() gives the smallest id of the component."""

    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo
            self.parent.setdefault(lo, lo)


@dataclasses.dataclass
class Clusters:
    """doc id -> representative (only documents in clusters of two or more are listed)."""

    root: dict[str, str]

    def representative(self, doc_id: str) -> str:
        return self.root.get(doc_id, doc_id)

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for doc, rep in sorted(self.root.items()):
            out.setdefault(rep, []).append(doc)
        return out

    def removed(self) -> set[str]:
        return {d for d, r in self.root.items() if d != r}


def clusters_from_edges(edges: Iterable[tuple[str, str]]) -> Clusters:
    uf = UnionFind()
    for a, b in edges:
        uf.union(a, b)
    return Clusters({d: uf.find(d) for d in sorted(uf.parent)})


def near_duplicates(docs: Mapping[str, str] | Iterable[tuple[str, str]],
                    config: MinHashConfig = DEFAULT) -> Clusters:
    """Clusters of near-duplicate documents among `docs` (id -> text, or (id, text) pairs)."""
    pairs = docs.items() if isinstance(docs, Mapping) else docs
    buckets: dict[bytes, list[str]] = {}
    for doc_id, text in pairs:
        for key, d in doc_band_keys(str(doc_id), text, config):
            buckets.setdefault(key, []).append(d)
    return clusters_from_edges(e for members in buckets.values() if len(members) > 1
                               for e in bucket_edges(members))


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for checks and tests)."""
    sa, sb = set(shingles(words(a), ngram)), set(shingles(words(b), ngram))
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0
