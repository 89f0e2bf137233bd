"""Input readers: every good record kept, every problem counted per file and reason."""

import collections
import os

from phi4_jax.data.prepare import list_inputs
from phi4_jax.data.readers import REASONS, BadInputReport, ReadOptions, read_records
from phi4_jax.io.jsonl import split_lines
from tests.data.corpus import MAX_DOC_CHARS, write_broken_corpus


def test_broken_corpus_is_read_exactly(tmp_path):
    good, bad, per_file = write_broken_corpus(str(tmp_path))
    assert len(bad) >= 10  # kinds of damage
    report = BadInputReport(REASONS)
    kept = []
    for path in list_inputs([str(tmp_path)]):
        kept += [text for _, text in read_records(path, ReadOptions(max_doc_chars=MAX_DOC_CHARS),
                                                  report)]
    assert kept == good
    assert report.totals() == bad
    # records_ok is counted by the tokenizing step; here count the kept records per file
    assert set(report.totals()) <= set(REASONS)
    damaged = {os.path.basename(p) for p, f in report.files.items() if f.bad}
    assert damaged == {"b_damaged.jsonl", "c_truncated.jsonl.gz", "d_truncated.jsonl.zst",
                       "f_table.parquet", "g_nocol.parquet", "h_corrupt.parquet", "i_data.bin",
                       "t03.txt", "t04.txt", "t05.txt"}
    first = report.files[str(tmp_path / "b_damaged.jsonl")].first
    assert first["malformed_json"].startswith("line 2:")
    assert first["oversized_document"].startswith("line 11:")
    assert len(per_file) == 9


def test_long_lines_are_skipped_with_bounded_memory():
    chunks = [b"short\n", b"x" * 50, b"y" * 50, b"z\nafter\n", b"tail"]
    out = list(split_lines(iter(chunks), 20))
    assert out == [(1, b"short\n"), (2, None), (3, b"after\n"), (4, b"tail")]


def test_report_merges_and_serializes():
    a, b = BadInputReport(REASONS), BadInputReport(REASONS)
    a.ok("f", 3)
    a.bad("f", "malformed_json", "line 2", "oops")
    b.bad("f", "malformed_json", "line 9", "later")
    b.bad("g", "empty_document", "line 1")
    merged = BadInputReport.from_json(a.merge(b).to_json(), REASONS)
    assert merged.totals() == collections.Counter(malformed_json=2, empty_document=1)
    assert merged.files["f"].first["malformed_json"] == "line 2: oops"
    assert "3 records kept, 3 rejected" in merged.format_text()
