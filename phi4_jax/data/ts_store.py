"""Token stores on tensorstore: zarr v3 arrays on any kvstore (local files, gs://, memory://).

Layout under a store URL (or local directory):

    manifest.json   written last, the same Manifest as a memory-mapped store's, with
                    storage = {"format": "zarr3", "codec": ..., "chunk_tokens", "shard_tokens"}
    tokens/         zarr v3 uint32 [num_tokens]
    offsets/        zarr v3 int64 [num_documents + 1]
    loss_mask/      zarr v3 uint8 [num_tokens] (chat / SFT sources only)
    report.json/.txt  prepare's bad-input report

Each array is cut into shards of `shard_tokens` (one object each: 16M tokens, about 19 MiB of
zstd-compressed tokens) holding inner chunks of `chunk_tokens` (16K) with their own zstd frame and
CRC-32C, so a reader fetches a document with byte-range reads of the inner chunks it overlaps,
and a damaged or truncated object fails its checksum instead of returning wrong tokens. A missing
object is an error, never zeros (`fill_missing_data_reads=False`). The choice of codec and
sizes is measured in docs/data.md ("Token stores in cloud storage").

Readers (`ZarrTokenStore`, usually via `store.open_store(url)`) keep the offsets in memory and
read token ranges on demand: `read_spans` merges overlapping ranges, issues at most
`ReadPolicy.max_in_flight` reads at a time (grouped in a `ts.Batch` so reads of one shard share
requests), retries a failed or slow (`timeout_s`) read `retries` times with exponential backoff,
and then raises StoreError naming the store URL, the token range and the documents.

Credentials: tensorstore's GCS driver finds them (application default credentials, or none for
a public bucket); the project stores none. `TENSORSTORE_GCS_HTTP_URL` points it at an emulator.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Any

import numpy as np
import tensorstore as ts

from phi4_jax.data.store import (
    MANIFEST,
    ContentDigest,
    DigestingWriter,
    Manifest,
    StoreError,
    StoreReader,
    _ramp,
    is_url,
)

ARRAYS = {"tokens": "uint32", "offsets": "int64", "loss_mask": "uint8"}
CODECS = ("zstd", "raw")
DEFAULT_CHUNK_TOKENS = 1 << 14  # 64 KiB of tokens per inner chunk (one zstd frame)
DEFAULT_SHARD_TOKENS = 1 << 24  # 64 MiB of tokens per object before compression
_CONTEXT_LOCK = threading.Lock()
_CONTEXT: list[ts.Context] = []


def context() -> ts.Context:
    """The one tensorstore Context of this process: memory:// stores are shared through it, and
    it bounds concurrent file and GCS requests and holds no chunk cache (reads are one-shot)."""
    with _CONTEXT_LOCK:
        if not _CONTEXT:
            _CONTEXT.append(ts.Context({"file_io_concurrency": {"limit": 32},
                                        "gcs_request_concurrency": {"limit": 32},
                                        "gcs_request_retries": {"max_retries": 4}}))
        return _CONTEXT[0]


def kvstore_url(path: str) -> str:
    """The kvstore URL of a store: a URL as given, a local path as file://ABS; ends with '/'."""
    url = path if is_url(path) else "file://" + os.path.abspath(path)
    return url.rstrip("/") + "/"


def _kv(path: str) -> ts.KvStore:
    try:
        return ts.KvStore.open(kvstore_url(path), context=context()).result()
    except ValueError as e:
        raise StoreError(f"{path}: cannot open it as a tensorstore kvstore ({e})") from e


def read_bytes(path: str, key: str) -> bytes | None:
    """The object `key` under `path` (None if absent)."""
    result = _kv(path).read(key).result()
    return result.value if result.state == "value" else None


def write_bytes(path: str, key: str, data: bytes) -> None:
    """Writes one object (atomic: a whole-object PUT on GCS, a rename on local files)."""
    _kv(path).write(key, data).result()


def exists(path: str, key: str) -> bool:
    return _kv(path).read(key).result().state == "value"


def _prefix_range(prefix: str) -> ts.KvStore.KeyRange:
    """Every key starting with `prefix` (all keys for "")."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else ""
    return ts.KvStore.KeyRange(prefix, end)


def list_keys(path: str, prefix: str = "") -> list[str]:
    keys = _kv(path).list(_prefix_range(prefix)).result()
    return sorted(k.decode() if isinstance(k, bytes) else k for k in keys)


def delete(path: str, key: str) -> None:
    """Deletes one object (no error if absent). Stores delete single keys, never key ranges:
    a range delete lists objects, and GCS emulators ignore a listing's range."""
    _kv(path).write(key, None).result()


def read_manifest(path: str) -> Manifest:
    where = f"{path.rstrip('/')}/{MANIFEST}"
    try:
        data = read_bytes(path, MANIFEST)
    except ValueError as e:  # unreachable bucket, no permission, ...
        raise StoreError(f"{where}: cannot read it ({e})") from e
    if data is None:
        raise StoreError(f"{where}: missing; not a token store, or its prepare job has not "
                         "finished (rerun it: completed shards are kept)")
    return Manifest.from_bytes(data, where)


def _metadata(dtype: str, codec: str, level: int, chunk: int, shard: int) -> dict[str, Any]:
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codec == "zstd":
        inner.append({"name": "zstd", "configuration": {"level": level}})
    inner.append({"name": "crc32c"})
    return {"data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [shard]}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [chunk], "codecs": inner, "index_location": "start",
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                                 {"name": "crc32c"}]}}]}


def _array_spec(path: str, name: str) -> dict[str, Any]:
    return {"driver": "zarr3", "kvstore": kvstore_url(path) + name + "/"}


def _create(path: str, name: str, metadata: dict[str, Any]) -> ts.TensorStore:
    """A new array `name` under `path`, replacing an existing one's metadata. Its old chunks are
    not listed and deleted (see `delete`): the writer rewrites every chunk of the new size, and
    chunks beyond it are unreachable (they cost storage until the prefix is removed)."""
    delete(path, f"{name}/zarr.json")
    return ts.open({**_array_spec(path, name), "metadata": metadata}, create=True,
                   context=context()).result()


class ZarrStoreWriter(DigestingWriter):
    """Streams documents into a zarr3 store at `path` (a URL or local directory); writes whole
    shards as they fill, the offsets and then the manifest at `finish()`. Until then the store
    has no manifest (an existing one is deleted first), so readers refuse it."""

    def __init__(self, path: str, source_name: str, *, with_loss_mask: bool = False,
                 codec: str = "zstd", level: int = 3, zarr_chunk: int = DEFAULT_CHUNK_TOKENS,
                 zarr_shard: int = DEFAULT_SHARD_TOKENS):
        if codec not in CODECS:
            raise StoreError(f"{path}: unknown codec {codec!r} (one of {CODECS})")
        if zarr_shard % zarr_chunk:
            raise StoreError(f"{path}: zarr_shard {zarr_shard} is not a multiple of "
                             f"zarr_chunk {zarr_chunk}")
        self.path, self.source_name, self.with_loss_mask = path, source_name, with_loss_mask
        self.storage = {"format": "zarr3", "codec": codec, "level": level if codec == "zstd"
                        else None, "chunk_tokens": zarr_chunk, "shard_tokens": zarr_shard}
        delete(path, MANIFEST)  # invalidate first: readers refuse the store until finish()
        self.digest = ContentDigest(path, with_loss_mask)
        names = ["tokens", "loss_mask"] if with_loss_mask else ["tokens"]
        self._arrays = {}
        for name in names:
            meta = _metadata(ARRAYS[name], codec, level, zarr_chunk, zarr_shard)
            self._arrays[name] = _create(path, name, {**meta, "shape": [0]})
        self._pending: dict[str, list[np.ndarray]] = {n: [] for n in names}
        self._pending_size, self._written = 0, 0

    def _write(self, tokens: np.ndarray, mask: np.ndarray | None) -> None:
        self._pending["tokens"].append(tokens)
        if mask is not None:
            self._pending["loss_mask"].append(mask)
        self._pending_size += tokens.size
        shard = self.storage["shard_tokens"]
        if self._pending_size >= shard:
            self._flush(self._pending_size // shard * shard)

    def _flush(self, count: int) -> None:
        """Writes the first `count` pending tokens (whole shards except at the end)."""
        if count == 0:
            return
        start, end = self._written, self._written + count
        writes = []
        for name, parts in self._pending.items():
            data = np.concatenate(parts)
            array = self._arrays[name].resize(exclusive_max=[end], expand_only=True,
                                              resize_metadata_only=True).result()
            self._arrays[name] = array
            writes.append(array[start:end].write(data[:count]))
            self._pending[name] = [data[count:]] if data.size > count else []
        for w in writes:
            w.result()
        self._written, self._pending_size = end, self._pending_size - count

    def finish(self, info: dict[str, Any] | None = None) -> Manifest:
        self._flush(self._pending_size)
        offsets = self.digest.offsets()
        meta = _metadata("int64", self.storage["codec"], self.storage["level"] or 0,
                         self.storage["chunk_tokens"], self.storage["shard_tokens"])
        array = _create(self.path, "offsets", {**meta, "shape": [offsets.size]})
        array.write(offsets).result()
        manifest = self.digest.manifest(self.source_name, info, storage=dict(self.storage))
        write_bytes(self.path, MANIFEST, manifest.to_json().encode())
        return manifest


@dataclasses.dataclass(frozen=True)
class ReadPolicy:
    """How a reader fetches: reads in flight at once, per-read timeout, retries and backoff."""

    max_in_flight: int = 64
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.25


class ZarrTokenStore(StoreReader):
    """A zarr3 store read on demand from its kvstore; offsets held in memory."""

    def __init__(self, path: str, *, verify: bool = False, vocab_size: int | None = None,
                 manifest: Manifest | None = None, policy: ReadPolicy | None = None):
        m = manifest or read_manifest(path)
        self._check_manifest(path, m)
        if m.format != "zarr3":
            raise StoreError(f"{path}: a {m.format} store, not zarr3")
        self.policy = policy or ReadPolicy()
        names = ["tokens", "offsets"] + (["loss_mask"] if m.has_loss_mask else [])
        self._arrays = {}
        for name in names:
            spec = {**_array_spec(path, name), "fill_missing_data_reads": False}
            try:
                array = ts.open(spec, open=True, read=True, context=context()).result()
            except ValueError as e:
                raise StoreError(f"{self.array_location(name)}: missing or unreadable, but "
                                 f"{MANIFEST} is there: the store's data is gone or was never "
                                 f"completely copied ({e})") from e
            size = m.num_documents + 1 if name == "offsets" else m.num_tokens
            if array.shape != (size,) or array.dtype.numpy_dtype != np.dtype(ARRAYS[name]):
                raise StoreError(f"{self.array_location(name)}: shape {array.shape} "
                                 f"{array.dtype.name}, the manifest says [{size}] {ARRAYS[name]}")
            self._arrays[name] = array
        self.offsets = np.zeros(m.num_documents + 1, np.int64)  # for messages while reading
        self.offsets = self._read_ranges("offsets", np.array([0]),
                                         np.array([m.num_documents + 1]))[0].astype(np.int64)
        self._check_offsets(self.array_location("offsets"))
        self._finish_open(verify, vocab_size)

    def array_location(self, array: str) -> str:
        return f"{self.path.rstrip('/')}/{array}"

    def read_range(self, array: str, begin: int, end: int) -> np.ndarray:
        return self._read_ranges(array, np.array([begin]), np.array([end]))[0]

    def read_spans(self, begin: np.ndarray, end: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        begin, end = np.asarray(begin, np.int64), np.asarray(end, np.int64)
        if begin.size == 0:
            return np.zeros(0, np.uint32), (np.zeros(0, np.uint8) if self.has_loss_mask
                                            else None)
        # Merge overlapping or touching ranges: each token is fetched once.
        order = np.argsort(begin, kind="stable")
        b, e = begin[order], end[order]
        reach = np.maximum.accumulate(e)
        first = np.r_[True, b[1:] > reach[:-1]]
        starts = np.nonzero(first)[0]
        group_begin, group_end = b[first], np.maximum.reduceat(e, starts)
        group = np.cumsum(first) - 1
        group_size = group_end - group_begin
        position = np.empty_like(begin)
        position[order] = (np.cumsum(group_size) - group_size)[group] + b - group_begin[group]
        lengths = end - begin
        index = np.repeat(position, lengths) + _ramp(lengths)
        tokens = np.concatenate(self._read_ranges("tokens", group_begin, group_end))[index]
        mask = None
        if self.has_loss_mask:
            mask = np.concatenate(self._read_ranges("loss_mask", group_begin, group_end))[index]
        return tokens, mask

    def _read_ranges(self, array: str, begin: np.ndarray, end: np.ndarray) -> list[np.ndarray]:
        """Elements [begin[i], end[i]) of one array: at most max_in_flight reads at a time,
        each retried on failure or timeout; StoreError naming the URL and documents after
        the last retry."""
        out: list[np.ndarray | None] = [None] * len(begin)
        policy, data = self.policy, self._arrays[array]
        for lo in range(0, len(begin), policy.max_in_flight):
            todo = list(range(lo, min(lo + policy.max_in_flight, len(begin))))
            for attempt in range(policy.retries + 1):
                if attempt:
                    time.sleep(policy.backoff_s * 2 ** (attempt - 1))
                with ts.Batch() as batch:
                    futures = {i: data[int(begin[i]):int(end[i])].read(batch=batch)
                               for i in todo}
                failed, deadline = [], time.monotonic() + policy.timeout_s
                for i, future in futures.items():
                    try:
                        out[i] = future.result(timeout=max(deadline - time.monotonic(), 0.0))
                    except (ValueError, TimeoutError, OSError) as err:
                        future.cancel()
                        failed.append(i)
                        last = err
                todo = failed
                if not todo:
                    break
            if todo:
                i = todo[0]
                reason = ("timed out" if isinstance(last, TimeoutError)
                          else f"{type(last).__name__}: {last}")
                raise StoreError(f"{self.array_location(array)}: reading "
                                 f"{self._describe(array, int(begin[i]), int(end[i]))} failed "
                                 f"{policy.retries + 1} times ({len(todo)} ranges failing; last: "
                                 f"{reason})")
        return out

    def _describe(self, array: str, begin: int, end: int) -> str:
        if array == "offsets":
            return f"offsets {begin}..{end}"
        first = int(np.searchsorted(self.offsets, begin, side="right")) - 1
        last = int(np.searchsorted(self.offsets, max(end - 1, begin), side="right")) - 1
        docs = f"document {first}" if first == last else f"documents {first}..{last}"
        return f"tokens {begin}..{end} ({docs})"
