"""Hostile input to `prepare`, the readers, SFT data and mixtures: each bad record is counted
with its file and line, each bad request is refused with a message naming it -- nothing stops
the job, nothing hangs, nothing is silently dropped or silently kept."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from phi4_jax import cli
from phi4_jax.data import chat, prepare, sft
from phi4_jax.data.mixture import MixtureError, load_mixture
from phi4_jax.data.readers import REASONS, BadInputReport, ReadOptions, read_records
from phi4_jax.data.store import TokenStore
from tests.io.test_jsonl import HOSTILE, _finishes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READER_REASON = {"malformed_json": "malformed_json", "invalid_utf8": "invalid_utf8"}


def _prepare(inputs, out, *extra):
    return prepare.main([*(f"--input={i}" for i in inputs), f"--output={out}",
                         "--source_name=hostile", *extra])


def test_prepare_counts_each_hostile_line_with_file_and_line_and_reruns(tmp_path):
    """The lines that stopped prepare (RecursionError, a 5,000-digit integer, ...) are counted
    bad records; the compressed files named in upper case or without .gz are decompressed."""
    os.makedirs(tmp_path / "in")
    lines = []
    for i, (text, _, _) in enumerate(HOSTILE):
        lines += [json.dumps({"text": f"good document {i}"}), text]
    hostile = tmp_path / "in" / "hostile.jsonl"
    hostile.write_text("\n".join(lines) + "\n")
    good = [json.dumps({"text": f"compressed document {i}"}) for i in range(5)]
    blob = gzip.compress(("\n".join(good) + "\n").encode())
    (tmp_path / "in" / "UPPER.JSONL.GZ").write_bytes(blob)
    (tmp_path / "in" / "gzip_named.jsonl").write_bytes(blob)
    out = tmp_path / "store"
    for _ in range(2):  # the rerun finds the finished store
        assert _prepare([tmp_path / "in"], out) == 0
    report = json.loads((out / "report.json").read_text())
    expected = {}
    for _, reason, _ in HOSTILE:
        expected[READER_REASON[reason]] = expected.get(READER_REASON[reason], 0) + 1
    assert report["bad_by_reason"] == expected
    first = report["files"][str(hostile)]["first"]
    assert first["malformed_json"].startswith("line 2: invalid JSON (nested too deeply)")
    surrogate = next(i for i, h in enumerate(HOSTILE) if h[1] == "invalid_utf8")
    assert first["invalid_utf8"].startswith(f"line {2 * surrogate + 2}: a lone surrogate")
    for name in ("UPPER.JSONL.GZ", "gzip_named.jsonl"):
        assert report["files"][str(tmp_path / "in" / name)]["records_ok"] == 5, name
    assert TokenStore(str(out)).num_documents == len(HOSTILE) + 10


def test_a_50mb_line_is_read_in_linear_time_and_an_over_long_one_counted(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"text": "' + b"x" * (50 << 20) + b'"}\n{"text": "after"}\n')
    report = BadInputReport(REASONS)
    start = time.perf_counter()
    docs = [len(t) for _, t in read_records(str(path), ReadOptions(max_doc_chars=60 << 20),
                                            report)]
    assert docs == [50 << 20, 5] and time.perf_counter() - start < 3.0  # was 9.5 s
    report = BadInputReport(REASONS)
    start = time.perf_counter()
    docs = [t for _, t in read_records(str(path), ReadOptions(max_doc_chars=1 << 20), report)]
    assert docs == ["after"] and time.perf_counter() - start < 1.0
    assert report.files[str(path)].first["oversized_document"].startswith("line 1: line longer")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_non_regular_files_are_never_opened(tmp_path):
    """A FIFO named .txt hung prepare forever: in a directory it is counted unreadable_file (as
    is a socket, and a dangling symlink); named explicitly it is a usage error naming it."""
    os.makedirs(tmp_path / "in")
    (tmp_path / "in" / "doc.txt").write_text("a real document")
    os.mkfifo(tmp_path / "in" / "pipe.txt")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "in" / "sock.jsonl"))
    os.symlink(tmp_path / "gone.txt", tmp_path / "in" / "dangling.txt")
    out = tmp_path / "store"
    finished, error = _finishes(lambda: _prepare([tmp_path / "in"], out), seconds=120)
    sock.close()
    assert finished and error is None, error
    report = json.loads((out / "report.json").read_text())
    assert report["bad_by_reason"] == {"unreadable_file": 3} and report["records_ok"] == 1
    first = report["files"][str(tmp_path / "in" / "pipe.txt")]["first"]["unreadable_file"]
    assert "not a regular file (a FIFO)" in first
    with pytest.raises(cli.UsageError, match=r"pipe.txt: not a regular file"):
        prepare.list_inputs([str(tmp_path / "in" / "pipe.txt")])


def test_inputs_naming_nothing_are_usage_errors(tmp_path):
    os.makedirs(tmp_path / "empty")
    for pattern, message in [(str(tmp_path / "nomatch" / "*.txt"), "no files match"),
                             (str(tmp_path / "missing.jsonl"), "no such file"),
                             (str(tmp_path / "empty"), "holds no input files")]:
        with pytest.raises(cli.UsageError, match=message) as info:
            prepare.list_inputs([pattern])
        assert pattern in str(info.value)


def test_the_prepare_command_exits_2_naming_an_empty_glob(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "phi4_jax.data.prepare",
                           "--input=nomatch/*.txt", f"--output={tmp_path / 'out'}",
                           "--source_name=s"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == ["python -m phi4_jax.data.prepare: error: --input nomatch/*.txt: no files "
                      "match this pattern"]
    assert not (tmp_path / "out").exists()


def msg(role, content):
    return {"role": role, "content": content}


QA = [msg("user", "q"), msg("assistant", "a")]
# (conversation, the reason the SFT builder and prepare --format chat both reject it, or the
# turns both keep)
CONVERSATIONS = [
    (QA, QA),
    ([msg("system", "s"), *QA, msg("user", "q2"), msg("assistant", "a2")], None),
    ([msg("user", "q"), msg("assistant", "  ")], "empty_assistant_turn"),
    ([msg("assistant", "a"), msg("user", "q"), msg("assistant", "a")], "assistant_first"),
    ([msg("system", "s"), msg("assistant", "a")], "assistant_first"),
    ([msg("user", "q"), msg("user", "q again"), msg("assistant", "a")], "turns_not_alternating"),
    ([*QA, msg("assistant", "a again")], "turns_not_alternating"),
    ([*QA, msg("user", "more?"), msg("assistant", "")], QA),  # cut at the empty turn
    ([*QA, msg("user", "bye")], QA),  # trailing turns dropped
    ("not a list", "missing_messages"),
]


def test_prepare_chat_keeps_exactly_what_the_sft_reader_keeps(tmp_path):
    path = tmp_path / "convs.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c, _ in CONVERSATIONS))
    _, stats = sft.build_store([str(path)], str(tmp_path / "sft"), max_tokens=10_000)
    assert _prepare([path], tmp_path / "chat", "--format=chat") == 0
    rejected = [o for _, o in CONVERSATIONS if isinstance(o, str)]
    assert dict(stats.skipped) == {r: rejected.count(r) for r in set(rejected)}
    report = json.loads((tmp_path / "chat" / "report.json").read_text())
    assert report["bad_by_reason"] == {"malformed_conversation": len(rejected)}
    first = report["files"][str(path)]["first"]["malformed_conversation"]
    assert first.startswith("line 3: empty_assistant_turn: messages[1]")
    by_sft, by_prepare = TokenStore(str(tmp_path / "sft")), TokenStore(str(tmp_path / "chat"))
    kept = [c if o is None else o for c, o in CONVERSATIONS if not isinstance(o, str)]
    assert by_sft.num_documents == by_prepare.num_documents == len(kept)
    for d, turns in enumerate(kept):
        ids, mask = chat.render(turns)
        for store in (by_sft, by_prepare):
            assert store.document(d).tolist() == ids.tolist()
            assert store.loss_mask[store.offsets[d]:store.offsets[d + 1]].tolist() == \
                mask.tolist()


def test_parse_sft_uses_the_same_validator():
    ok = sft.SFTExample("s", tuple(QA), "demo").to_json()
    with pytest.raises(sft.rf.RecordError, match="^messages: messages.1.: a second user turn"):
        sft.parse_sft(ok | {"messages": [msg("user", "q"), msg("user", "q2"),
                                         msg("assistant", "a")]})
    with pytest.raises(sft.rf.RecordError, match="starts with an assistant turn"):
        sft.parse_sft(ok | {"messages": [msg("assistant", "a"), *QA]})


def test_sft_data_counts_hostile_lines_with_file_and_line(tmp_path):
    path = tmp_path / "convs.jsonl"
    good = json.dumps({"messages": QA})
    lines = [good]
    for text, _, _ in HOSTILE:
        lines += [text, good]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"messages": "\xff"}\n')
    _, stats = sft.build_store([str(path)], str(tmp_path / "sft"), max_tokens=100)
    assert stats.kept == len(HOSTILE) + 1
    counted = {"malformed_json": "invalid_json", "invalid_utf8": "invalid_utf8"}
    expected = {}
    for _, reason, _ in [*HOSTILE, (None, "invalid_utf8", None)]:
        expected[counted[reason]] = expected.get(counted[reason], 0) + 1
    assert dict(stats.skipped) == expected
    first = stats.bad.files[str(path)].first
    assert first["invalid_json"] == f"{path}:2: invalid JSON (nested too deeply)"


MIXTURE_FILE = """from phi4_jax.data.mixture import Mixture, Source, Stage
MIXTURE = Mixture("m", total_tokens=1e6,
                  sources=(Source("web", "web", unique_tokens={unique}), Source("code", "code")),
                  stages=(Stage({{"web": {weight}, "code": 0.5}}),))
"""


@pytest.mark.parametrize("unique, weight, message", [
    ("1e5", "'0.5'", r"stage 0 '': weight of source 'web' must be a finite number, got str"),
    ("'1e5'", "0.5", r"source 'web': unique_tokens must be a finite number, got str '1e5'"),
    ("True", "0.5", r"source 'web': unique_tokens must be a finite number, got bool"),
    ("float('nan')", "0.5", r"source 'web': unique_tokens must be a finite number, got float"),
])
def test_mixture_field_types_are_checked_naming_file_source_and_field(tmp_path, unique, weight,
                                                                      message):
    path = tmp_path / "typo.py"
    path.write_text(MIXTURE_FILE.format(unique=unique, weight=weight))
    with pytest.raises(MixtureError) as info:
        load_mixture(str(path))
    assert str(info.value).startswith(f"{path}: mixture 'm', ")
    assert re.search(message, str(info.value)), str(info.value)
