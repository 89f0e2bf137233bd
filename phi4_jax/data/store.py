"""Token stores: one directory per source, written once by `prepare`, memory-mapped by readers.

Layout of a store directory:

    manifest.json   written last: its presence means the store is complete (see Manifest)
    tokens.bin      all documents' token ids back to back, uint32 little-endian
    offsets.npy     int64 [num_documents + 1]: document d is tokens[offsets[d]:offsets[d + 1]]
    loss_mask.bin   optional uint8 per token (chat/SFT sources): 1 where the token is a target
    report.json/.txt  the bad-input report of the prepare run (when written by prepare)

The content fingerprint is the sha256 of the format version, tokenizer id, token bytes, offsets
bytes and loss-mask bytes. Iterator checkpoints record it, so a resumed run fails loudly when a
store was rewritten (manifest included) under it.

A store rewritten in place with its manifest untouched keeps the old fingerprint, so the
manifest also records a CRC-32 per chunk of CHECKSUM_CHUNK_TOKENS tokens (of tokens.bin and of
loss_mask.bin) and of the offsets: `TokenStore.verify_chunks(sample=k)` checks the offsets and k
chunks (the first, the last and random others; all of them when sample=None) at a bounded cost,
and the data pipeline runs it when it restores an iterator state. The manifest also records the
largest token id, so a consumer that knows its vocabulary size (`TokenStore(path,
vocab_size=V)`) refuses a store with ids >= V at open in O(1). Stores written before these
fields existed still open: the largest id is then computed once with numpy, and the chunk
check is skipped with one warning per store.

Two formats implement one reader interface (`StoreReader`): this module's memory-mapped files
(`TokenStore`) and `phi4_jax.data.ts_store`'s zarr v3 arrays on any tensorstore kvstore (local,
gs://, memory://), recorded in the manifest's `storage` field. `open_store(path_or_url)` opens
either; both have the same manifest, fingerprint and per-chunk checksums for the same content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from phi4_jax.data.tokenizer import TOKENIZER_ID
from phi4_jax.io.atomic import atomic_write_bytes

FORMAT_VERSION = 1
MANIFEST, TOKENS, OFFSETS, LOSS_MASK = "manifest.json", "tokens.bin", "offsets.npy", "loss_mask.bin"
CHECKSUM_CHUNK_TOKENS = 1 << 22  # 16 MiB of tokens.bin (4 MiB of loss_mask.bin) per checksum
log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # stores without checksums, warned about once per process


class StoreError(RuntimeError):
    """A token store is missing, incomplete or inconsistent; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    source_name: str
    num_documents: int
    num_tokens: int  # "unique tokens" of the source: one epoch
    tokenizer_id: str
    fingerprint: str
    has_loss_mask: bool
    format_version: int = FORMAT_VERSION
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Written since the chunk checks (None in older stores, and max_token_id in empty ones):
    max_token_id: int | None = None
    # {"algorithm": "crc32", "chunk_tokens": C, "offsets": hex, "tokens": [hex per chunk],
    #  "loss_mask": [hex per chunk] (with a loss mask)}
    checksums: dict[str, Any] | None = None
    # How the arrays are stored: None for the memory-mapped files of this module, else e.g.
    # {"format": "zarr3", "codec": "zstd", ...} (phi4_jax.data.ts_store). Not in the fingerprint.
    storage: dict[str, Any] | None = None

    @property
    def format(self) -> str:
        return (self.storage or {}).get("format", "mmap")

    def to_json(self) -> str:
        raw = dataclasses.asdict(self)
        if raw["storage"] is None:  # memory-mapped stores keep their manifest as it was
            del raw["storage"]
        return json.dumps(raw, indent=2, sort_keys=True)

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        try:
            return cls(**json.loads(data))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise StoreError(f"{where}: unreadable manifest ({e})") from e

    @classmethod
    def from_file(cls, path: str) -> Manifest:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as e:
            raise StoreError(f"{path}: missing; not a token store, or its prepare job has not "
                             "finished (rerun it: completed shards are kept)") from e
        return cls.from_bytes(data, path)


class _ChunkCRC:
    """CRC-32 of consecutive fixed-size chunks of a byte stream fed in arbitrary pieces."""

    def __init__(self, chunk_bytes: int):
        self.chunk_bytes, self.sums, self.crc, self.filled = chunk_bytes, [], 0, 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view.nbytes:
            take = min(self.chunk_bytes - self.filled, view.nbytes)
            self.crc, self.filled = zlib.crc32(view[:take], self.crc), self.filled + take
            view = view[take:]
            if self.filled == self.chunk_bytes:
                self.sums.append(self.crc)
                self.crc, self.filled = 0, 0

    def hex(self) -> list[str]:
        return [f"{c:08x}" for c in self.sums + ([self.crc] if self.filled else [])]


class ContentDigest:
    """What every store writer computes while documents stream in, whatever the format: the
    content fingerprint, the per-chunk CRC-32s, the largest token id and the offsets."""

    def __init__(self, where: str, with_loss_mask: bool):
        self.where, self.with_loss_mask = where, with_loss_mask
        self._lengths: list[np.ndarray] = []
        self._hash = hashlib.sha256(f"{FORMAT_VERSION}:{TOKENIZER_ID}".encode())
        self._mask_hash = hashlib.sha256()
        self._token_crc = _ChunkCRC(CHECKSUM_CHUNK_TOKENS * 4)
        self._mask_crc = _ChunkCRC(CHECKSUM_CHUNK_TOKENS)
        self.num_tokens = 0
        self.max_token_id: int | None = None

    def update(self, tokens: np.ndarray, doc_lengths: np.ndarray,
               loss_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Checks and digests documents given as concatenated tokens and per-document lengths;
        returns the tokens as little-endian uint32 and the mask as uint8 (or None)."""
        tokens = np.ascontiguousarray(tokens, dtype="<u4")
        doc_lengths = np.asarray(doc_lengths, np.int64)
        if int(doc_lengths.sum()) != tokens.size or (doc_lengths <= 0).any():
            raise StoreError(f"{self.where}: document lengths must be positive and sum to the "
                             f"number of tokens ({int(doc_lengths.sum())} != {tokens.size})")
        if (loss_mask is None) == self.with_loss_mask:
            raise StoreError(f"{self.where}: loss_mask must be given iff with_loss_mask")
        buf = tokens.tobytes()
        self._hash.update(buf)
        self._token_crc.update(buf)
        if tokens.size:
            top = int(tokens.max())
            self.max_token_id = top if self.max_token_id is None else max(self.max_token_id, top)
        mask = None
        if loss_mask is not None:
            mask = np.ascontiguousarray(loss_mask, dtype=np.uint8)
            if mask.size != tokens.size:
                raise StoreError(f"{self.where}: loss_mask has {mask.size} entries for "
                                 f"{tokens.size} tokens")
            self._mask_hash.update(mask.tobytes())
            self._mask_crc.update(mask.tobytes())
        self._lengths.append(doc_lengths)
        self.num_tokens += tokens.size
        return tokens, mask

    def offsets(self) -> np.ndarray:
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def manifest(self, source_name: str, info: dict[str, Any] | None = None,
                 storage: dict[str, Any] | None = None) -> Manifest:
        offsets = self.offsets()
        digest = self._hash.copy()
        digest.update(offsets.astype("<i8").tobytes())
        digest.update(self._mask_hash.digest() if self.with_loss_mask else b"")
        checksums = {"algorithm": "crc32", "chunk_tokens": CHECKSUM_CHUNK_TOKENS,
                     "offsets": f"{zlib.crc32(offsets.astype('<i8').tobytes()):08x}",
                     "tokens": self._token_crc.hex()}
        if self.with_loss_mask:
            checksums["loss_mask"] = self._mask_crc.hex()
        return Manifest(source_name=source_name, num_documents=int(offsets.size - 1),
                        num_tokens=int(self.num_tokens), tokenizer_id=TOKENIZER_ID,
                        fingerprint=digest.hexdigest(), has_loss_mask=self.with_loss_mask,
                        info=dict(info or {}), max_token_id=self.max_token_id,
                        checksums=checksums, storage=storage)


class DigestingWriter:
    """What every store writer shares: documents are checked and digested (`self.digest`, a
    ContentDigest the subclass makes), then handed to the format's `_write`."""

    digest: ContentDigest

    @property
    def num_tokens(self) -> int:
        return self.digest.num_tokens

    def append(self, tokens: np.ndarray, doc_lengths: np.ndarray,
               loss_mask: np.ndarray | None = None) -> None:
        """Appends documents given as their concatenated tokens and per-document lengths."""
        tokens, mask = self.digest.update(tokens, doc_lengths, loss_mask)
        self._write(tokens, mask)

    def _write(self, tokens: np.ndarray, mask: np.ndarray | None) -> None:
        raise NotImplementedError


class StoreWriter(DigestingWriter):
    """Streams documents into a new store; `finish()` renames the files into place, manifest last.

    A crash before `finish` leaves no manifest, so readers refuse the partial store.
    """

    def __init__(self, path: str, source_name: str, *, with_loss_mask: bool = False):
        self.path, self.source_name, self.with_loss_mask = path, source_name, with_loss_mask
        os.makedirs(path, exist_ok=True)
        if os.path.exists(os.path.join(path, MANIFEST)):
            os.remove(os.path.join(path, MANIFEST))  # invalidate before overwriting the data
        self._suffix = f".tmp-{uuid.uuid4().hex[:8]}"
        self._tokens = open(os.path.join(path, TOKENS + self._suffix), "wb")  # noqa: SIM115
        self._mask = (open(os.path.join(path, LOSS_MASK + self._suffix), "wb")  # noqa: SIM115
                      if with_loss_mask else None)
        self.digest = ContentDigest(path, with_loss_mask)

    def _write(self, tokens: np.ndarray, mask: np.ndarray | None) -> None:
        self._tokens.write(tokens.tobytes())
        if mask is not None:
            self._mask.write(mask.tobytes())

    def finish(self, info: dict[str, Any] | None = None) -> Manifest:
        offsets = self.digest.offsets()
        for f in (self._tokens, self._mask):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
                f.close()
        os.replace(os.path.join(self.path, TOKENS + self._suffix), os.path.join(self.path, TOKENS))
        if self.with_loss_mask:
            os.replace(os.path.join(self.path, LOSS_MASK + self._suffix),
                       os.path.join(self.path, LOSS_MASK))
        npy = io.BytesIO()
        np.save(npy, offsets)
        atomic_write_bytes(os.path.join(self.path, OFFSETS), npy.getvalue())
        manifest = self.digest.manifest(self.source_name, info)
        atomic_write_bytes(os.path.join(self.path, MANIFEST), manifest.to_json().encode())
        return manifest


def write_store(path: str, source_name: str, documents: Iterable[np.ndarray], *,
                loss_masks: Iterable[np.ndarray] | None = None,
                info: dict[str, Any] | None = None, chunk_tokens: int = 1 << 22,
                store_format: str | None = None, **options: Any) -> Manifest:
    """Writes a store from an iterable of token arrays (one per document); store_format and
    options as `store_writer` (default: zarr3 for a URL, else mmap)."""
    writer = store_writer(path, source_name, with_loss_mask=loss_masks is not None,
                          store_format=store_format, **options)
    masks = iter(loss_masks) if loss_masks is not None else None
    pending: list[np.ndarray] = []
    pending_masks: list[np.ndarray] = []
    size = 0

    def flush():
        nonlocal size
        if pending:
            writer.append(np.concatenate(pending), np.array([len(p) for p in pending]),
                          np.concatenate(pending_masks) if masks is not None else None)
        pending.clear()
        pending_masks.clear()
        size = 0

    for doc in documents:
        pending.append(np.asarray(doc))
        if masks is not None:
            pending_masks.append(np.asarray(next(masks)))
        size += len(doc)
        if size >= chunk_tokens:
            flush()
    flush()
    return writer.finish(info)


def store_writer(path: str, source_name: str, *, with_loss_mask: bool = False,
                 store_format: str | None = None, **options: Any):
    """A writer (`append(tokens, lengths, mask)`, `finish(info) -> Manifest`) for `path` in
    `store_format`: "mmap" (this module's files; a local path) or "zarr3" (ts_store: any
    tensorstore kvstore). Default: zarr3 for a URL (gs://, memory://, file://), else mmap."""
    store_format = store_format or ("zarr3" if is_url(path) else "mmap")
    if store_format == "mmap":
        if is_url(path):
            raise StoreError(f"{path}: memory-mapped stores are local directories; write a "
                             "URL with store_format='zarr3'")
        if options:
            raise StoreError(f"{path}: the mmap format takes no options ({sorted(options)})")
        return StoreWriter(path, source_name, with_loss_mask=with_loss_mask)
    if store_format == "zarr3":
        from phi4_jax.data import ts_store  # noqa: PLC0415 (tensorstore only when used)

        return ts_store.ZarrStoreWriter(path, source_name, with_loss_mask=with_loss_mask,
                                        **options)
    raise StoreError(f"{path}: unknown store format {store_format!r} (mmap or zarr3)")


def is_url(path: str) -> bool:
    return "://" in path


def read_manifest(path: str) -> Manifest:
    """The manifest of the store at a local path or URL (StoreError naming it if absent)."""
    if not is_url(path):
        return Manifest.from_file(os.path.join(path, MANIFEST))
    from phi4_jax.data import ts_store  # noqa: PLC0415

    return ts_store.read_manifest(path)


def open_store(path: str, *, verify: bool = False, vocab_size: int | None = None
               ) -> StoreReader:
    """Opens the store at a local path or URL in whichever format its manifest records."""
    manifest = read_manifest(path)
    if manifest.format == "mmap":
        if is_url(path):
            raise StoreError(f"{path}: a memory-mapped store cannot be read from a URL; convert "
                             "it (python -m phi4_jax.data.convert_store)")
        return TokenStore(path, verify=verify, vocab_size=vocab_size, manifest=manifest)
    if manifest.format == "zarr3":
        from phi4_jax.data import ts_store  # noqa: PLC0415

        return ts_store.ZarrTokenStore(path, verify=verify, vocab_size=vocab_size,
                                       manifest=manifest)
    raise StoreError(f"{path}: unknown store format {manifest.format!r} in its manifest")


def _ramp(lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..l0), [0..l1), ..."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


class StoreReader:
    """What every store format gives readers (the pipeline, layouts, checks, the converter).

    A format sets `path`, `manifest` and `offsets` (int64 [num_documents + 1], in memory or
    mapped) and implements `read_range` (one array's tokens [begin, end)) and `read_spans`
    (many ranges at once: what packing calls). The checks below are shared."""

    path: str
    manifest: Manifest
    offsets: np.ndarray

    def _check_manifest(self, path: str, m: Manifest) -> None:
        self.path, self.manifest = path, m
        self._max_token_id: int | None = None
        # The store's name, counts and fingerprint are its (frozen) manifest's.
        self.name, self.fingerprint = m.source_name, m.fingerprint
        self.num_documents, self.num_tokens = m.num_documents, m.num_tokens
        if m.format_version != FORMAT_VERSION:
            raise StoreError(f"{path}: store format {m.format_version}, this code reads "
                             f"{FORMAT_VERSION}")
        if m.tokenizer_id != TOKENIZER_ID:
            raise StoreError(f"{path}: tokenized with {m.tokenizer_id!r}, this code uses "
                             f"{TOKENIZER_ID!r}; re-run prepare")

    def _check_offsets(self, where: str) -> None:
        m = self.manifest
        if (self.offsets.shape != (m.num_documents + 1,) or self.offsets.dtype != np.int64
                or self.offsets[0] != 0 or self.offsets[-1] != m.num_tokens):
            raise StoreError(f"{where}: shape {self.offsets.shape} / bounds do not match "
                             f"the manifest ({m.num_documents} documents, {m.num_tokens} tokens)")

    def _finish_open(self, verify: bool, vocab_size: int | None) -> None:
        if verify and self.compute_fingerprint() != self.manifest.fingerprint:
            raise StoreError(f"{self.path}: content does not match the manifest fingerprint")
        if vocab_size is not None:
            self.check_vocab(vocab_size)

    @property
    def has_loss_mask(self) -> bool:
        return self.manifest.has_loss_mask

    def array_location(self, array: str) -> str:
        """Where `array` ("tokens", "loss_mask", "offsets") lives, for messages."""
        raise NotImplementedError

    def read_range(self, array: str, begin: int, end: int) -> np.ndarray:
        """Elements [begin, end) of "tokens" (uint32) or "loss_mask" (uint8)."""
        raise NotImplementedError

    def read_spans(self, begin: np.ndarray, end: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """Token ranges [begin[i], end[i]) concatenated in order, and their loss mask (None
        without one)."""
        raise NotImplementedError

    @property
    def max_token_id(self) -> int | None:
        """The largest token id (None for an empty store): the manifest's, else computed once
        from the tokens."""
        if self.manifest.max_token_id is not None:
            return self.manifest.max_token_id
        if self._max_token_id is None and self.num_tokens:
            chunk = CHECKSUM_CHUNK_TOKENS
            self._max_token_id = max(int(np.max(self.read_range("tokens", a, a + chunk)))
                                     for a in range(0, self.num_tokens, chunk))
        return self._max_token_id

    def check_vocab(self, vocab_size: int) -> None:
        """StoreError naming the store if it holds a token id outside [0, vocab_size)."""
        top = self.max_token_id
        if top is not None and top >= vocab_size:
            raise StoreError(f"{self.path}: source {self.name!r} holds token id {top}, outside "
                             f"the model's vocabulary of {vocab_size} ids (tokenized for another "
                             "vocabulary?); re-run prepare with the model's tokenizer or use a "
                             "model whose vocab_size covers it")

    def verify_chunks(self, sample: int | None = 8, seed: int | None = None) -> int:
        """Checks the offsets and `sample` chunks of tokens (and loss mask) against the
        manifest's checksums: the first, the last and random others (every chunk when sample
        is None or the store has no more). Returns the chunks checked (0 for a store written
        before checksums: warned once); raises StoreError naming the file and chunk."""
        sums = self.manifest.checksums
        if not sums:
            if self.path not in _WARNED:
                _WARNED.add(self.path)
                log.warning("token store %s has no per-chunk checksums (written before they "
                            "were recorded): a change made in place cannot be detected; re-run "
                            "prepare to add them", self.path)
            return 0
        if sums.get("algorithm") != "crc32":
            raise StoreError(f"{self.path}: unknown checksum algorithm {sums.get('algorithm')!r}")
        offsets = np.ascontiguousarray(self.offsets, "<i8")
        if f"{zlib.crc32(offsets):08x}" != sums["offsets"]:
            raise StoreError(f"{self.array_location('offsets')}: does not match its checksum "
                             "in the manifest: the store changed after it was written")
        chunk, count = int(sums["chunk_tokens"]), len(sums["tokens"])
        if count != -(-self.num_tokens // chunk):
            raise StoreError(f"{self.path}: the manifest has {count} token checksums for "
                             f"{self.num_tokens} tokens")
        picks = range(count)
        if sample is not None and count > sample:
            rest = np.random.default_rng(seed).choice(np.arange(1, count - 1), max(sample - 2, 0),
                                                      replace=False)
            picks = sorted({0, count - 1, *map(int, rest)})
        arrays = [("tokens", sums["tokens"])]
        if self.has_loss_mask:
            arrays.append(("loss_mask", sums.get("loss_mask") or []))
        for name, expected in arrays:
            for k in picks:
                part = np.ascontiguousarray(self.read_range(name, k * chunk,
                                                            min((k + 1) * chunk, self.num_tokens)))
                if k >= len(expected) or f"{zlib.crc32(part):08x}" != expected[k]:
                    raise StoreError(f"{self.array_location(name)}: chunk {k} (tokens "
                                     f"{k * chunk}..{min((k + 1) * chunk, self.num_tokens)}) "
                                     "does not match its checksum in the manifest: the store "
                                     "changed after it was written")
        return len(picks)

    def doc_lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))

    def document(self, index: int) -> np.ndarray:
        return self.read_range("tokens", int(self.offsets[index]), int(self.offsets[index + 1]))

    def compute_fingerprint(self, chunk: int = 1 << 24) -> str:
        """The sha256 the writers record (same definition for every format)."""
        h = hashlib.sha256(f"{FORMAT_VERSION}:{TOKENIZER_ID}".encode())
        for start in range(0, self.num_tokens, chunk):
            end = min(start + chunk, self.num_tokens)
            h.update(np.ascontiguousarray(self.read_range("tokens", start, end), "<u4").tobytes())
        h.update(np.asarray(self.offsets).astype("<i8").tobytes())
        if self.has_loss_mask:
            mh = hashlib.sha256()
            for start in range(0, self.num_tokens, chunk):
                end = min(start + chunk, self.num_tokens)
                mh.update(np.asarray(self.read_range("loss_mask", start, end)).tobytes())
            h.update(mh.digest())
        return h.hexdigest()


class TokenStore(StoreReader):
    """Read-only view of a memory-mapped store: tokens, offsets and optional loss mask."""

    _FILES = {"tokens": TOKENS, "loss_mask": LOSS_MASK, "offsets": OFFSETS}

    def __init__(self, path: str, *, verify: bool = False, vocab_size: int | None = None,
                 manifest: Manifest | None = None):
        """Opens (memory-maps) the store at `path`. verify: recompute the whole fingerprint.
        vocab_size: refuse a store holding token ids >= vocab_size (StoreError naming it)."""
        m = manifest or Manifest.from_file(os.path.join(path, MANIFEST))
        self._check_manifest(path, m)
        if m.format != "mmap":
            raise StoreError(f"{path}: a {m.format} store; open it with "
                             "phi4_jax.data.store.open_store")
        self.tokens = self._map(TOKENS, np.dtype("<u4"), m.num_tokens)
        self.loss_mask = self._map(LOSS_MASK, np.dtype(np.uint8), m.num_tokens) \
            if m.has_loss_mask else None
        offsets_path = os.path.join(path, OFFSETS)
        try:
            self.offsets = np.load(offsets_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise StoreError(f"{offsets_path}: unreadable ({e})") from e
        self._check_offsets(offsets_path)
        self._finish_open(verify, vocab_size)

    def array_location(self, array: str) -> str:
        return os.path.join(self.path, self._FILES[array])

    def read_range(self, array: str, begin: int, end: int) -> np.ndarray:
        data = self.tokens if array == "tokens" else self.loss_mask
        return np.asarray(data[begin:end])

    def read_spans(self, begin: np.ndarray, end: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        lengths = np.asarray(end, np.int64) - begin
        index = np.repeat(np.asarray(begin, np.int64), lengths) + _ramp(lengths)
        return self.tokens[index], (self.loss_mask[index] if self.loss_mask is not None
                                    else None)

    def _map(self, name: str, dtype: np.dtype, count: int) -> np.ndarray:
        file = os.path.join(self.path, name)
        try:
            size = os.path.getsize(file)
        except OSError as e:
            raise StoreError(f"{file}: missing ({e})") from e
        if size != count * dtype.itemsize:
            raise StoreError(f"{file}: {size} bytes, the manifest says {count} x "
                             f"{dtype.itemsize} bytes")
        if count == 0:
            return np.zeros(0, dtype)
        return np.memmap(file, dtype=dtype, mode="r", shape=(count,))
