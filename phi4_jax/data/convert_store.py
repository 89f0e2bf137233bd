"""Copy a token store into another format or place: memory-mapped files <-> zarr3 (any kvstore).

    python -m phi4_jax.data.convert_store stores/web gs://BUCKET/stores/web
    python -m phi4_jax.data.convert_store gs://BUCKET/stores/web stores/web --store_format mmap

The copy has the same manifest (name, counts, tokenizer, info), the same content fingerprint
and per-chunk checksums, so an iterator checkpoint written against one resumes from the other.
The source is read in blocks of whole documents; the destination's manifest is written last,
after the copy's fingerprint has been checked against the source's. The destination format
defaults to zarr3 for a URL and mmap for a local path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phi4_jax import cli
from phi4_jax.data.store import Manifest, StoreError, is_url, open_store, store_writer

PROG = "python -m phi4_jax.data.convert_store"


def convert(source: str, destination: str, *, store_format: str | None = None,
            block_tokens: int = 1 << 24, **options) -> Manifest:
    """Copies the store at `source` to `destination`; returns the new manifest."""
    if source.rstrip("/") == destination.rstrip("/"):
        raise StoreError(f"{destination}: the destination is the source")
    src = open_store(source)
    writer = store_writer(destination, src.name, with_loss_mask=src.has_loss_mask,
                          store_format=store_format, **options)
    offsets = np.asarray(src.offsets)
    doc = 0
    while doc < src.num_documents:  # blocks of whole documents, at least one
        last = max(int(np.searchsorted(offsets, offsets[doc] + block_tokens, "right")) - 1,
                   doc + 1)
        begin, end = int(offsets[doc]), int(offsets[last])
        tokens = src.read_range("tokens", begin, end)
        mask = src.read_range("loss_mask", begin, end) if src.has_loss_mask else None
        writer.append(tokens, np.diff(offsets[doc:last + 1]), mask)
        doc = last
    manifest = writer.digest.manifest(src.name)
    if manifest.fingerprint != src.fingerprint:
        raise StoreError(f"{source}: the copy's fingerprint {manifest.fingerprint} differs from "
                         f"the manifest's {src.fingerprint}: the source store changed after it "
                         f"was written; {destination} is left without a manifest")
    return writer.finish(src.manifest.info)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(PROG, __doc__, example=f"{PROG} stores/web gs://BUCKET/stores/web")
    parser.add_argument("source", help="store directory or URL to read")
    parser.add_argument("destination", help="store directory or URL to write")
    parser.add_argument("--store_format", choices=("mmap", "zarr3"), default=None,
                        help="destination format (default: zarr3 for a URL, else mmap)")
    parser.add_argument("--codec", choices=("zstd", "raw"), default="zstd",
                        help="zarr3 chunk compression")
    args = parser.parse_args(argv)
    fmt = args.store_format or ("zarr3" if is_url(args.destination) else "mmap")
    if fmt == "mmap" and is_url(args.destination):
        raise cli.UsageError(f"{args.destination}: a URL holds zarr3 stores; give a local "
                             "directory for --store_format=mmap")
    options = {"codec": args.codec} if fmt == "zarr3" else {}
    try:
        manifest = convert(args.source, args.destination, store_format=fmt, **options)
    except StoreError as e:
        raise cli.UsageError(str(e)) from e
    print(f"store {args.destination} ({fmt}): {manifest.num_documents} documents, "
          f"{manifest.num_tokens} tokens, fingerprint {manifest.fingerprint[:16]} (same as "
          f"{args.source})")
    return 0


if __name__ == "__main__":
    cli.run(main, prog=PROG)
