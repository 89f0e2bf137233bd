"""Turns row layouts (document spans per row) into the batch arrays the train step consumes.

For each row of length T (numpy, per host):

    tokens      int32   the input ids; PAD (100349) in padding
    targets     int32   the next token of the same document; PAD where there is none
    positions   int32   0, 1, 2... restarting at every document piece in the row: a document
                        split over rows restarts at 0 in its next row (it cannot attend back)
    segment_ids int32   1, 2, 3... per document piece in the row; 0 in padding
    loss_mask   float32 1 where targets[t] is a real next token of the same document (also across
                        a row split: the last token of a split piece predicts the document's next
                        token), times the store's own loss mask at the target (SFT); 0 elsewhere

With `provenance=True`, also: source int32 [B] (index into the mixture's sources), document
int64 [B, T] (-1 in padding), doc_position int64 [B, T] (offset in the document) and epoch
int32 [B, T]: enough to check every token against its store independently.
"""

from __future__ import annotations

import numpy as np

from phi4_jax.data.row_layout import Pieces
from phi4_jax.data.store import StoreReader
from phi4_jax.data.tokenizer import PAD

BATCH_KEYS = ("tokens", "targets", "positions", "segment_ids", "loss_mask")


def empty_batch(num_rows: int, seq_len: int, provenance: bool = False) -> dict[str, np.ndarray]:
    shape = (num_rows, seq_len)
    batch = {"tokens": np.full(shape, PAD, np.int32), "targets": np.full(shape, PAD, np.int32),
             "positions": np.zeros(shape, np.int32), "segment_ids": np.zeros(shape, np.int32),
             "loss_mask": np.zeros(shape, np.float32)}
    if provenance:
        batch.update(source=np.full(num_rows, -1, np.int32),
                     document=np.full(shape, -1, np.int64),
                     doc_position=np.full(shape, -1, np.int64),
                     epoch=np.full(shape, -1, np.int32))
    return batch


def _ramp(lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..l0), [0..l1), ..."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def fill_rows(batch: dict[str, np.ndarray], out_rows: np.ndarray, pieces: Pieces,
              store: StoreReader) -> None:
    """Writes `pieces` (rows indexed into out_rows) from `store` into `batch` in place.

    Each piece is read from the store as one span, its tokens plus the next one of its document
    (the last target), with `store.read_spans`: one call per source and batch, whatever the
    store's format."""
    if pieces.length.size == 0:
        return
    seq_len = batch["tokens"].shape[1]
    length = pieces.length
    within = _ramp(length)
    doc_start = store.offsets[pieces.doc]
    doc_len = store.offsets[pieces.doc + 1] - doc_start
    offset_in_doc = np.repeat(pieces.start, length) + within
    span_begin = doc_start + pieces.start
    span_end = np.minimum(span_begin + length + 1, doc_start + doc_len)
    tokens, store_mask = store.read_spans(span_begin, span_end)
    span_len = span_end - span_begin
    src = np.repeat(np.cumsum(span_len) - span_len, length) + within  # index into `tokens`
    row = out_rows[pieces.row]
    dest = np.repeat(row * seq_len + pieces.dst, length) + within
    has_next = offset_in_doc + 1 < np.repeat(doc_len, length)
    target_src = np.where(has_next, src + 1, src)
    batch["tokens"].reshape(-1)[dest] = tokens[src]
    batch["targets"].reshape(-1)[dest] = np.where(has_next, tokens[target_src], PAD)
    mask = has_next.astype(np.float32)
    if store_mask is not None:
        mask *= store_mask[target_src]
    batch["loss_mask"].reshape(-1)[dest] = mask
    batch["positions"].reshape(-1)[dest] = within
    # Segment ids: piece ordinal within its row (pieces are sorted by row, then slot).
    first = np.r_[True, pieces.row[1:] != pieces.row[:-1]]
    first_index = np.maximum.accumulate(np.where(first, np.arange(first.size), 0))
    segment = np.arange(first.size) - first_index + 1
    batch["segment_ids"].reshape(-1)[dest] = np.repeat(segment, length)
    if "document" in batch:
        batch["document"].reshape(-1)[dest] = np.repeat(pieces.doc, length)
        batch["doc_position"].reshape(-1)[dest] = offset_in_doc
        batch["epoch"].reshape(-1)[dest] = np.repeat(pieces.epoch, length)
