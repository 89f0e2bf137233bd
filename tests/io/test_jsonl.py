"""The shared JSONL line reader on hostile input: every parse failure is one counted line, long
lines cost linear time, compression is read from the bytes, and a FIFO is never opened."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time

import pytest
import zstandard

from phi4_jax.io import jsonl

# (a hostile line, the reason it is counted under, words of its message)
HOSTILE = [
    ("[" * 5000 + "]" * 5000, "malformed_json", "nested too deeply"),   # RecursionError
    ('{"a": ' + "[" * 150 + "]" * 150 + "}", "malformed_json", "nested deeper than 100"),
    ('{"n": ' + "7" * 5000 + "}", "malformed_json", "4300 digits"),   # int-string limit
    ('{"score": NaN}', "malformed_json", "NaN is not a JSON number"),
    ('{"score": -Infinity}', "malformed_json", "-Infinity is not a JSON number"),
    ('{"score": 1e999}', "malformed_json", "1e999 is out of range"),
    ('{"text": "lone \\ud800"}', "invalid_utf8", "lone surrogate"),
    ('{"broken": ', "malformed_json", "invalid JSON (Expecting value"),
]


def write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize("text, reason, words", HOSTILE, ids=[h[1] + str(i)
                                                              for i, h in enumerate(HOSTILE)])
def test_loads_raises_only_json_error_naming_the_reason(text, reason, words):
    with pytest.raises(jsonl.JSONError, match=None) as info:
        jsonl.loads(text)
    assert info.value.reason == reason and words in str(info.value)


def test_loads_accepts_what_json_allows():
    assert jsonl.loads('{"emoji": "\\ud83d\\ude00"}') == {"emoji": "\U0001F600"}  # paired
    assert jsonl.loads("[" * 100 + "]" * 100) is not None  # at the depth bound
    assert jsonl.loads('{"n": ' + "7" * 4000 + "}")["n"] > 0
    assert jsonl.loads("[NaN]", allow_nonfinite=True)[0] != 0
    with pytest.raises(jsonl.JSONError) as info:
        jsonl.loads(b'{"t": "\xff"}')
    assert info.value.reason == "invalid_utf8" and "invalid UTF-8" in str(info.value)


def test_every_hostile_line_is_one_error_with_its_line_and_the_rest_is_kept(tmp_path):
    lines = []
    for i, (text, _, _) in enumerate(HOSTILE):
        lines += [json.dumps({"good": i}), text]
    path = write(tmp_path / "hostile.jsonl", "\n".join(lines).encode() + b"\n\n")
    out = list(jsonl.read_lines(path))
    assert [obj for _, obj, err in out if err is None] == [{"good": i} for i in range(len(HOSTILE))]
    errors = [(n, err.reason) for n, _, err in out if err is not None]
    assert errors == [(2 * i + 2, reason) for i, (_, reason, _) in enumerate(HOSTILE)]
    assert all(isinstance(err, str) for _, _, err in out if err)  # the message stays a str


def test_a_50mb_line_is_read_in_linear_time(tmp_path):
    path = write(tmp_path / "long.jsonl", b'{"text": "' + b"x" * (50 << 20) + b'"}\n{"a": 1}\n')
    start = time.perf_counter()
    out = list(jsonl.read_lines(path))
    elapsed = time.perf_counter() - start
    assert [len(o["text"]) if "text" in o else o for _, o, _ in out] == [50 << 20, {"a": 1}]
    assert elapsed < 3.0, elapsed  # the old `buf += chunk` reader took 9.5 s
    start = time.perf_counter()  # over the bound: one 'oversized' line, skipped as it streams
    out = list(jsonl.read_lines(path, max_line_bytes=1 << 20))
    assert [(n, e.reason if e else o) for n, o, e in out] == [(1, "oversized"), (2, {"a": 1})]
    assert time.perf_counter() - start < 1.0


def test_split_lines_is_linear_in_many_small_chunks():
    chunks = [b"y" * 1000] * 20_000 + [b"\nend"]  # one 20 MB line in 1 KB pieces
    start = time.perf_counter()
    out = list(jsonl.split_lines(iter(chunks), 64 << 20))
    assert [(n, len(line)) for n, line in out] == [(1, 20_000_001), (2, 3)]
    assert time.perf_counter() - start < 1.0


def test_compression_is_read_from_the_magic_bytes_not_the_name(tmp_path):
    records = [{"i": i, "text": f"record {i}"} for i in range(500)]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    files = {
        "UPPER.JSONL.GZ": gzip.compress(data),                      # upper-case extension
        "gzip_named.jsonl": gzip.compress(data),                    # gzip without .gz
        "two_members.jsonl": gzip.compress(data[:999]) + gzip.compress(data[999:]),
        "zstd_named.txt": zstandard.ZstdCompressor().compress(data),
        "plain.jsonl.gz": data,                                     # named .gz, plain text
        "bom.jsonl": b"\xef\xbb\xbf" + data,
    }
    for name, blob in files.items():
        out = list(jsonl.read_lines(write(tmp_path / name, blob)))
        assert [o for _, o, e in out] == records, name


def test_a_truncated_stream_keeps_the_lines_before_it(tmp_path):
    data = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(3000))
    zst = zstandard.ZstdCompressor()
    frames = zst.compress(data[:20_000]), zst.compress(data[20_000:])
    gz = gzip.compress(data)
    for name, blob in (("cut.jsonl.gz", gz[:len(gz) // 2]),
                       ("cut.jsonl.zst", frames[0] + frames[1][:len(frames[1]) // 2])):
        out = list(jsonl.read_lines(write(tmp_path / name, blob)))
        kept = [o["i"] for _, o, e in out if e is None]
        assert kept == list(range(len(kept))) and 0 < len(kept) < 3000, name
        assert out[-1][2].reason == "corrupt_compressed_stream" and "truncated" in out[-1][2]


def _finishes(fn, seconds: float = 10.0):
    """fn() run in a daemon thread: (finished, its exception or None)."""
    box = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_naming_it_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    finished, error = _finishes(lambda: list(jsonl.read_lines(fifo)))
    assert finished, "reading a FIFO blocked"
    assert isinstance(error, jsonl.NotRegularFileError) and isinstance(error, OSError)
    assert str(fifo) in str(error) and "FIFO" in str(error)
    finished, error = _finishes(lambda: jsonl.open_regular("/dev/zero"))
    assert finished and isinstance(error, jsonl.NotRegularFileError) and "device" in str(error)


def test_read_objects_names_a_non_object(tmp_path):
    path = write(tmp_path / "x.jsonl", b'[1]\n{"a": 1}\n')
    out = list(jsonl.read_objects(path))
    assert out[0][2] == "not a JSON object" and out[0][2].reason == "not_an_object"
    assert out[1] == (2, {"a": 1}, None)
