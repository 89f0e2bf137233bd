"""zarr3 token stores on tensorstore: the same content, fingerprint and batches as memory-mapped
stores; the converter; bad states named; reads retried and bounded; and a GCS emulator."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from phi4_jax.data import convert_store, pipeline, ts_store
from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.store import StoreError, TokenStore, open_store, write_store
from phi4_jax.data.ts_store import ReadPolicy, ZarrTokenStore
from tests.data import gcs_emulator
from tests.data.conftest import toy_mixture

SMALL = {"zarr_chunk": 256, "zarr_shard": 4096}  # many shards and chunks in a tiny store
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _docs(seed=0, n=120, with_mask=False):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 100352, size=int(rng.integers(1, 400))).astype(np.uint32)
            for _ in range(n)]
    masks = [rng.integers(0, 2, size=len(d)).astype(np.uint8) for d in docs]
    return docs, (masks if with_mask else None)


@pytest.fixture(scope="module")
def zarr_root(toy_root, tmp_path_factory):
    """The toy stores converted to zarr3 (local directories), small shards."""
    root = str(tmp_path_factory.mktemp("zarr"))
    for name in ("a", "b", "c", "tiny"):
        convert_store.convert(os.path.join(toy_root, name), os.path.join(root, name),
                              store_format="zarr3", **SMALL)
    return root


@pytest.mark.parametrize("where", ["local", "memory"])
def test_round_trip_same_manifest_and_fingerprint_as_mmap(tmp_path, where):
    docs, masks = _docs(with_mask=True)
    mmap = write_store(str(tmp_path / "mmap"), "s", docs, loss_masks=masks, chunk_tokens=500)
    url = str(tmp_path / "z") if where == "local" else f"memory://rt/{tmp_path.name}"
    zarr = write_store(url, "s", docs, loss_masks=masks, chunk_tokens=700,
                       store_format="zarr3", **SMALL)
    assert zarr.fingerprint == mmap.fingerprint and zarr.checksums == mmap.checksums
    assert zarr.max_token_id == mmap.max_token_id and zarr.storage["format"] == "zarr3"
    assert "storage" not in json.loads(mmap.to_json())  # mmap manifests are as before
    store = open_store(url, verify=True)
    assert isinstance(store, ZarrTokenStore) and store.num_tokens == mmap.num_tokens
    assert store.verify_chunks(sample=None) == 1
    np.testing.assert_array_equal(store.doc_lengths(), [len(d) for d in docs])
    for i in (0, 7, len(docs) - 1):
        np.testing.assert_array_equal(store.document(i), docs[i])
    # Overlapping, touching, repeated and unsorted spans come back in the order asked.
    ref = TokenStore(str(tmp_path / "mmap"))
    begin = np.array([900, 10, 10, 11, 5000, 0, store.num_tokens - 3])
    end = begin + np.array([40, 5, 300, 1, 1000, 1, 3])
    got, got_mask = store.read_spans(begin, end)
    want, want_mask = ref.read_spans(begin, end)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_mask, want_mask)


def test_pipeline_batches_and_resume_are_the_same_on_either_format(toy_root, zarr_root):
    def iterator(root):
        return pipeline.build_iterator(toy_mixture(), seq_len=64, global_batch_size=8,
                                       data_root=root, process_index=0, process_count=1,
                                       provenance=True)

    mm, zz = iterator(toy_root), iterator(zarr_root)
    assert isinstance(zz.data.stores[2], ZarrTokenStore)  # c: best-fit, with a loss mask
    assert zz.data.fingerprints == mm.data.fingerprints and zz.plan.table() == mm.plan.table()
    for _ in range(12):
        a, b = next(mm), next(zz)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # A state saved against the memory-mapped stores restores on the zarr3 copies.
    state = mm.get_state()
    fresh = iterator(zarr_root)
    fresh.set_state(state)
    a, b = next(mm), next(fresh)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_plan_reads_manifests_only_for_concat_sources(toy_root, zarr_root, monkeypatch):
    from phi4_jax.data.row_layout import measure_sources

    mixture = toy_mixture(packing_c="concat").resolve(zarr_root)
    monkeypatch.setattr(ts_store.ZarrTokenStore, "__init__", lambda *a, **k: 1 / 0)  # no opens
    unique, fills = measure_sources(mixture, seq_len=64)
    assert unique == {s: TokenStore(os.path.join(toy_root, s)).num_tokens
                      for s in ("a", "b", "c", "tiny")}
    assert set(fills.values()) == {1.0}


def test_converter_cli_round_trip_help_and_user_errors(tmp_path, toy_root, capsys):
    src = os.path.join(toy_root, "c")
    assert convert_store.main([src, str(tmp_path / "z"), "--store_format", "zarr3"]) == 0
    assert convert_store.main([str(tmp_path / "z"), str(tmp_path / "back")]) == 0
    out = capsys.readouterr().out
    assert "(zarr3)" in out and "(mmap)" in out
    assert TokenStore(str(tmp_path / "back"), verify=True).fingerprint == \
        TokenStore(src).fingerprint
    assert (tmp_path / "back" / "tokens.bin").read_bytes() == \
        pathlib.Path(src, "tokens.bin").read_bytes()
    cmd = [sys.executable, "-m", "phi4_jax.data.convert_store"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    help_ = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert help_.returncode == 0 and "example:\n  python -m phi4_jax.data.convert_store" in \
        help_.stdout
    for args, says in (([str(tmp_path / "nothing"), str(tmp_path / "y")], "manifest.json: missing"),
                       ([src, "memory://x/y", "--store_format", "mmap"], "a URL holds zarr3")):
        bad = subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=ROOT)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert bad.stderr.startswith("python -m phi4_jax.data.convert_store: error: ")
        assert says in bad.stderr


def test_prepare_writes_zarr3_to_a_url_with_the_local_stores_fingerprint(tmp_path):
    from phi4_jax.data import prepare
    from phi4_jax.data.readers import ReadOptions

    convs = [[{"role": "user", "content": f"question {i}"},
              {"role": "assistant", "content": f"answer {i} " * (i + 1)}] for i in range(30)]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n"
                                                for c in convs))
    manifests = {}
    for output in (str(tmp_path / "local"), f"memory://prep/{tmp_path.name}/sft"):
        config = prepare.PrepareConfig(
            source_name="sft", output=output, work_dir=f"{output}/_shards",
            read=ReadOptions(format="chat", text_field="messages"), append_eos=False)
        manifests[output] = prepare.run(config, [str(tmp_path / "sft.jsonl")])
        again = prepare.run(config, [str(tmp_path / "sft.jsonl")])  # finished: a no-op
        assert again == manifests[output]
    local, url = manifests.values()
    assert local.format == "mmap" and url.format == "zarr3"
    assert url.fingerprint == local.fingerprint and url.has_loss_mask
    store = open_store(f"memory://prep/{tmp_path.name}/sft", verify=True)
    assert store.verify_chunks(sample=None) == 1
    assert ts_store.read_bytes(f"memory://prep/{tmp_path.name}/sft", "report.txt")
    assert not ts_store.exists(f"memory://prep/{tmp_path.name}/sft/_shards", "000000.done")


def _zarr(tmp_path, **kw):
    docs, _ = _docs(seed=5)
    path = str(tmp_path / "z")
    write_store(path, "z", docs, store_format="zarr3", **SMALL, **kw)
    return path, docs


FAST = ReadPolicy(timeout_s=5, retries=2, backoff_s=0.01)


def test_a_missing_object_is_named_with_url_and_documents(tmp_path):
    path, docs = _zarr(tmp_path)
    store = ZarrTokenStore(path, policy=FAST)
    os.remove(os.path.join(path, "tokens", "c", "2"))  # the shard of tokens 8192..12288
    with pytest.raises(StoreError) as err:
        store.read_spans(np.array([8200]), np.array([8300]))
    message = str(err.value)
    doc = int(np.searchsorted(store.offsets, 8200, side="right")) - 1
    assert message.startswith(f"{path}/tokens: reading tokens 8200..8300 (document")
    assert f"{doc}" in message and "failed 3 times" in message and "NOT_FOUND" in message
    store.read_spans(np.array([0]), np.array([8000]))  # the rest still reads
    with pytest.raises(StoreError, match="tokens/c/2"):  # never zeros in its place
        ZarrTokenStore(path, verify=True, policy=FAST)


def test_a_truncated_or_damaged_chunk_is_named(tmp_path):
    path, _ = _zarr(tmp_path)
    shard = pathlib.Path(path, "tokens", "c", "1")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    store = ZarrTokenStore(path, policy=FAST)
    store.read_spans(np.array([4096]), np.array([4100]))  # its first chunks are whole
    with pytest.raises(StoreError, match=r"/tokens: reading tokens 8180\.\.8190 \(document"
                                         r".*(DATA_LOSS|OUT_OF_RANGE)"):  # the cut-off end
        store.read_spans(np.array([8180]), np.array([8190]))
    path2, _ = _zarr(tmp_path / "flip")
    shard = pathlib.Path(path2, "tokens", "c", "0")
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last chunk's compressed bytes: its CRC-32C fails
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="DATA_LOSS"):
        ZarrTokenStore(path2, policy=FAST).read_range("tokens", 0, 4096)


def test_a_store_of_another_tokenizer_and_a_manifest_without_data(tmp_path):
    path, _ = _zarr(tmp_path)
    original = json.loads(pathlib.Path(path, "manifest.json").read_text())
    manifest = {**original, "tokenizer_id": "o200k_base"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"tokenized with 'o200k_base', this code uses .*"
                                         r"re-run prepare"):
        open_store(str(tmp_path / "other"))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "manifest.json").write_text(json.dumps(original))
    with pytest.raises(StoreError, match=r"bare/tokens: missing or unreadable, but manifest.json "
                                         r"is there"):
        open_store(str(tmp_path / "bare"))
    with pytest.raises(StoreError, match=r"memory://nothing/here/manifest.json: missing"):
        open_store("memory://nothing/here")


def _wrap(store, fail=0):
    """Wraps a store's tokens array: counts reads per ts.Batch, fails the first `fail` reads."""
    original, reads = store._arrays["tokens"], {"n": 0, "per_batch": [], "batches": []}

    class Slice:
        def __init__(self, key):
            self.key = key

        def read(self, batch=None):
            if not reads["batches"] or reads["batches"][-1] is not batch:
                reads["batches"].append(batch)  # kept alive: ids are never reused
                reads["per_batch"].append(0)
            reads["per_batch"][-1] += 1
            reads["n"] += 1
            if reads["n"] <= fail:  # as a dropped connection would
                promise, future = ts_store.ts.Promise.new()
                promise.set_exception(ValueError("UNAVAILABLE: connection reset by peer"))
                return future
            return original[self.key].read(batch=batch)

    class Array:
        def __getitem__(self, key):
            return Slice(key)

    store._arrays["tokens"] = Array()
    return reads


def test_a_failing_read_is_retried_then_succeeds_or_is_named(tmp_path):
    path, docs = _zarr(tmp_path)
    store = ZarrTokenStore(path, policy=ReadPolicy(retries=2, backoff_s=0.01))
    reads = _wrap(store, fail=2)
    got, _ = store.read_spans(np.array([0]), np.array([len(docs[0])]))
    np.testing.assert_array_equal(got, docs[0])
    assert reads["n"] == 3  # two failures, one success
    store = ZarrTokenStore(path, policy=ReadPolicy(retries=2, backoff_s=0.01))
    _wrap(store, fail=10)
    with pytest.raises(StoreError, match=rf"^{path}/tokens: reading tokens 0\.\.{len(docs[0])} "
                                         r"\(document 0\) failed 3 times \(1 ranges failing; "
                                         r"last: ValueError: UNAVAILABLE: connection reset"):
        store.read_spans(np.array([0]), np.array([len(docs[0])]))


def test_reads_are_bounded_per_batch(tmp_path):
    path, docs = _zarr(tmp_path)
    store = ZarrTokenStore(path, policy=ReadPolicy(max_in_flight=4))
    reads = _wrap(store)
    begin = store.offsets[:-1][::3][:10]  # 10 separate documents
    got, _ = store.read_spans(begin, begin + 1)
    assert reads["per_batch"] == [4, 4, 2]
    np.testing.assert_array_equal(got, [docs[i][0] for i in range(0, 30, 3)])


@pytest.fixture(scope="module")
def emulator():
    proc, url = gcs_emulator.start()
    old = os.environ.get("TENSORSTORE_GCS_HTTP_URL")
    os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
    yield proc, url
    gcs_emulator.stop(proc)
    if old is None:
        os.environ.pop("TENSORSTORE_GCS_HTTP_URL", None)
    else:
        os.environ["TENSORSTORE_GCS_HTTP_URL"] = old


def test_gcs_emulator_round_trip_and_a_stalled_server(emulator, toy_root):
    proc, _ = emulator
    url = f"gs://{gcs_emulator.BUCKET}/stores/c"
    convert_store.convert(os.path.join(toy_root, "c"), url, **SMALL)
    store = open_store(url, verify=True)
    assert store.fingerprint == TokenStore(os.path.join(toy_root, "c")).fingerprint
    ref = TokenStore(os.path.join(toy_root, "c"))
    begin = ref.offsets[:-1]
    np.testing.assert_array_equal(store.read_spans(begin, begin + 5)[0],
                                  ref.read_spans(begin, begin + 5)[0])
    # A stalled server: each try times out, then the error names the store and documents.
    store.policy = ReadPolicy(timeout_s=0.5, retries=1, backoff_s=0.05)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(StoreError, match=rf"{url}/tokens: reading tokens \d+\.\.\d+ "
                                             r"\(document \d+\) failed 2 times .*timed out"):
            store.read_spans(begin[3:4], begin[3:4] + 5)
        # It comes back while the reader retries: the read succeeds.
        threading.Timer(0.7, os.kill, (proc.pid, signal.SIGCONT)).start()
        store.policy = ReadPolicy(timeout_s=3, retries=3, backoff_s=0.1)
        np.testing.assert_array_equal(store.read_spans(begin, begin + 5)[0],
                                      ref.read_spans(begin, begin + 5)[0])
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# --- the must-show: prepare into gs:// on the emulator, train, kill, resume ------------------

STEPS = 12
TRAIN = [sys.executable, "-m", "launch.local", "--exp=tiny_pretrain", "--exp.data.seq_len=32",
         "--exp.train.global_batch=8", "--exp.train.loss_vocab_chunks=1",
         "--exp.optimizer.warmup_steps=2", f"--exp.train.steps={STEPS}",
         "--exp.train.checkpoint_every=4", "--exp.train.log_every=1",
         "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=False"]


def _corpus(directory):
    os.makedirs(directory)
    rng = np.random.default_rng(0)
    words = ["token", "store", "bucket", "shard", "chunk", "reader", "epoch", "mixture"]
    for f in range(3):
        with open(os.path.join(directory, f"part-{f}.jsonl"), "w") as fh:
            for d in range(20):
                text = " ".join(rng.choice(words, size=int(rng.integers(5, 60))))
                fh.write(json.dumps({"text": f"doc {f}.{d}: {text}"}) + "\n")


def _mixture_file(path, store):
    mixture = Mixture("gcs_test", (Source("web", store),), (Stage({"web": 1.0}),), 1e6)
    assert mixture.sources[0].path == store
    with open(path, "w") as f:
        f.write("from phi4_jax.data.mixture import Mixture, Source, Stage\n"
                f"MIXTURE = Mixture('gcs_test', (Source('web', {store!r}),), "
                "(Stage({'web': 1.0}),), 1e6)\n")


def _losses(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # the line the kill cut short
                continue
            out[rec["step"]] = rec["loss"]
    return out


@pytest.mark.slow
def test_prepare_to_gcs_train_kill_resume_matches_local_stores(emulator, tmp_path):
    _, http = emulator
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT,
           "TENSORSTORE_GCS_HTTP_URL": http,
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    _corpus(str(tmp_path / "raw"))
    gcs = f"gs://{gcs_emulator.BUCKET}/prepared/web"
    prepare = [sys.executable, "-m", "phi4_jax.data.prepare", "--input", str(tmp_path / "raw"),
               "--source_name", "web", "--files_per_shard", "1"]
    for output in (gcs, str(tmp_path / "local_web")):
        done = subprocess.run(prepare + ["--output", output], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert isinstance(open_store(gcs), ZarrTokenStore)
    assert open_store(gcs).fingerprint == TokenStore(str(tmp_path / "local_web")).fingerprint
    assert not ts_store.exists(gcs, "_shards/prepare.json")  # shards removed after the merge
    assert not ts_store.exists(gcs, "_shards/000000.done")
    _mixture_file(str(tmp_path / "gcs_mix.py"), gcs)
    _mixture_file(str(tmp_path / "local_mix.py"), str(tmp_path / "local_web"))

    def train(mix, workdir):
        return subprocess.Popen(TRAIN + [f"--exp.data.mixture={mix}", f"--workdir={workdir}"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    local = train(str(tmp_path / "local_mix.py"), str(tmp_path / "run_local"))
    out, _ = local.communicate(timeout=600)
    assert local.returncode == 0, out[-3000:]
    expected = _losses(str(tmp_path / "run_local"))
    assert sorted(expected) == list(range(1, STEPS + 1))

    workdir = str(tmp_path / "run_gcs")
    proc = train(str(tmp_path / "gcs_mix.py"), workdir)
    checkpoint = os.path.join(workdir, "checkpoints", "4")
    deadline = time.time() + 600
    while not os.path.isdir(checkpoint):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(_losses(workdir)) < STEPS, "the run finished before it could be killed"
    resumed = train(str(tmp_path / "gcs_mix.py"), workdir)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "start from checkpoint at step" in out
    assert _losses(workdir) == expected  # exact float equality, every step
