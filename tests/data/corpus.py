"""A deliberately broken input corpus with independently known good records and damage."""

from __future__ import annotations

import collections
import gzip
import json
import os
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

MAX_DOC_CHARS = 2000


def _jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _complete_lines(data: bytes) -> list[str]:
    """The text fields of the complete (newline-terminated) lines of a decompressed prefix."""
    lines = data.split(b"\n")[:-1]
    return [json.loads(line)["text"] for line in lines]


def write_broken_corpus(root: str) -> tuple[list[str], collections.Counter, dict[str, int]]:
    """Writes the corpus; returns (good texts in store order, bad counts by reason,
    good records per file)."""
    os.makedirs(os.path.join(root, "texts"))
    good: list[tuple[str, str]] = []  # (path, text)
    bad = collections.Counter()

    def path(name):
        return os.path.join(root, name)

    clean = [f"Clean record {i}: the quick brown fox, {i * 7} jumps." for i in range(30)]
    with open(path("a_clean.jsonl"), "wb") as f:
        f.write(_jsonl({"text": t, "id": i} for i, t in enumerate(clean)))
    good += [(path("a_clean.jsonl"), t) for t in clean]

    lines = [
        (b'{"text": "good one"}', "good one"),
        (b'{"text": "unterminated', "malformed_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'{"body": "no text key"}', "missing_field"),
        (b'{"text": null}', "missing_field"),
        (b'{"text": 42}', "field_not_string"),
        (b'{"text": "raw \xff\xfe bytes"}', "invalid_utf8"),
        (b'{"text": "lone \\ud800 surrogate"}', "invalid_utf8"),
        (b'{"text": ""}', "empty_document"),
        (b'{"text": "  \\n\\t "}', "empty_document"),
        (json.dumps({"text": "x" * (MAX_DOC_CHARS + 1)}).encode(), "oversized_document"),
        (b"", None),  # a blank line is not a record
        (b'{"text": "good two with <|im_end|> inside"}', "good two with <|im_end|> inside"),
        (b'{"text": "last line, no newline"}', "last line, no newline"),
    ]
    with open(path("b_damaged.jsonl"), "wb") as f:
        f.write(b"\n".join(line for line, _ in lines))
    for _, outcome in lines:
        if outcome is None:
            continue
        if outcome.startswith(("good", "last")):
            good.append((path("b_damaged.jsonl"), outcome))
        else:
            bad[outcome] += 1

    gz_texts = [f"gzip record {i} " + "lorem ipsum " * (i % 13) for i in range(400)]
    compressed = gzip.compress(_jsonl({"text": t} for t in gz_texts))
    truncated = compressed[: len(compressed) * 2 // 3]
    with open(path("c_truncated.jsonl.gz"), "wb") as f:
        f.write(truncated)
    prefix = zlib.decompressobj(wbits=31).decompress(truncated)
    good += [(path("c_truncated.jsonl.gz"), t) for t in _complete_lines(prefix)]
    bad["corrupt_compressed_stream"] += 1

    zst_texts = [f"zstd record {i} " + "dolor sit amet " * (i % 17) for i in range(600)]
    frame1 = zstandard.ZstdCompressor().compress(_jsonl({"text": t} for t in zst_texts[:300]))
    frame2 = zstandard.ZstdCompressor().compress(_jsonl({"text": t} for t in zst_texts[300:]))
    with open(path("d_truncated.jsonl.zst"), "wb") as f:
        f.write(frame1 + frame2[: len(frame2) // 2])
    prefix = zstandard.ZstdDecompressor().decompress(frame1)
    prefix += zstandard.ZstdDecompressor().decompressobj().decompress(frame2[: len(frame2) // 2])
    good += [(path("d_truncated.jsonl.zst"), t) for t in _complete_lines(prefix)]
    bad["corrupt_compressed_stream"] += 1

    with open(path("e_clean.jsonl.zst"), "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(_jsonl({"text": t} for t in zst_texts[:40])))
    good += [(path("e_clean.jsonl.zst"), t) for t in zst_texts[:40]]

    column = ["parquet row zero", None, "parquet row two", "", "parquet row four"]
    pq.write_table(pa.table({"text": column, "n": list(range(5))}), path("f_table.parquet"))
    good += [(path("f_table.parquet"), t) for t in column if t]
    bad["missing_field"] += 1
    bad["empty_document"] += 1

    pq.write_table(pa.table({"body": ["no text column"]}), path("g_nocol.parquet"))
    bad["missing_column"] += 1
    with open(path("h_corrupt.parquet"), "wb") as f:
        f.write(b"PAR1 this is not really a parquet file PAR1")
    bad["unreadable_file"] += 1
    with open(path("i_data.bin"), "wb") as f:
        f.write(b"\x00\x01 binary")
    bad["unsupported_file_type"] += 1

    texts = {"t01.txt": "A plain text document.\nWith two lines.\n",
             "t02.md": "# Markdown\n\nA second *text* document.",
             "t03.txt": b"binary \x00 inside", "t04.txt": b"bad utf-8 \xc3\x28 here",
             "t05.txt": "   \n", "t06.rst": "Title\n=====\n\nThird text document."}
    for name, content in texts.items():
        data = content.encode() if isinstance(content, str) else content
        with open(os.path.join(root, "texts", name), "wb") as f:
            f.write(data)
    good += [(os.path.join(root, "texts", n), texts[n]) for n in ("t01.txt", "t02.md", "t06.rst")]
    bad.update(["binary_content", "invalid_utf8", "empty_document"])

    per_file = collections.Counter(p for p, _ in good)
    return [t for _, t in good], bad, dict(per_file)
