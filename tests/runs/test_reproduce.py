"""Run records end to end: launch.local writes them, `--reproduce` reruns one bit for bit,
`diff` names the one override of a rerun, `--strict` refuses a changed token store, a resumed
launch appends, data and post-training jobs record theirs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from launch import local
from phi4_jax import cli, runs
from phi4_jax.data.pipeline import mixture_stores
from phi4_jax.posttrain.refusal.cli import main as refusal_main
from phi4_jax.runs import diff, reproduce
from phi4_jax.runs.__main__ import main as runs_main
from tests.data.conftest import random_store
from tests.posttrain.openai_server import ScriptedServer
from tests.posttrain.refusal.test_cli import SEEDS, respond
from tests.test_cli import _run

TINY = ["--exp=tiny_pretrain", "--exp.data.source=synthetic", "--exp.model.vocab_size=256",
        "--exp.data.seq_len=32", "--exp.train.global_batch=8", "--exp.train.loss_vocab_chunks=1",
        "--exp.train.steps=3", "--exp.optimizer.warmup_steps=1", "--exp.train.log_every=1",
        "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=False"]


def losses(workdir) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("original"))
    local.main(["prog", *TINY, f"--workdir={workdir}"])
    return workdir


def test_the_launch_leaves_a_record(original):
    (record,) = runs.read(original)
    assert record["schema"] == runs.SCHEMA and record["kind"] == "train"
    assert record["status"] == "completed" and record["result"]["step"] == 3
    assert record["started"] < record["ended"] and record["error"] is None
    command = record["command"]
    assert command["line"].startswith("python -m launch.local --exp=tiny_pretrain ")
    assert command["exp"] == "tiny_pretrain" and command["overrides"] == TINY[1:]
    with open(os.path.join(original, "config.json")) as f:
        assert record["config"] == json.load(f)
    assert record["seeds"] == {"data.seed": 0, "train.seed": 0}
    assert len(record["code"]["commit"]) == 40
    assert record["packages"]["key"]["jax"] and record["packages"]["distributions"]["flax"]
    assert record["topology"]["device_count"] == 8 and record["topology"]["platform"] == "cpu"
    assert record["topology"]["mesh"]["fsdp"] == 8
    assert record["data"] == {"stores": {}, "files": {}}  # synthetic data
    assert record["resume"] == {"start": "scratch", "step": 0}


def test_two_reruns_from_one_record_give_bitwise_identical_losses(original, tmp_path):
    b, c = str(tmp_path / "b"), str(tmp_path / "c")
    local.main(["prog", f"--reproduce={original}", f"--workdir={b}"])
    local.main(["prog", f"--reproduce={original}@1", f"--workdir={c}"])
    assert len(losses(b)) == 3 and losses(b) == losses(c) == losses(original)
    first, again = runs.select(original), runs.select(b)
    assert again["config"] == first["config"]
    assert again["command"]["reproduced_from"] == {"spec": f"{original}@1", "workdir": original,
                                                   "launch": 1, "id": first["id"]}
    assert diff.compare(first, again)["config"] == []


def test_diff_of_a_rerun_with_one_override_names_that_key(original, tmp_path, capsys):
    d = str(tmp_path / "d")
    local.main(["prog", f"--reproduce={original}", f"--workdir={d}",
                "--exp.optimizer.peak_lr=1e-3"])
    capsys.readouterr()
    assert runs_main(["diff", original, d]) == 0
    out = capsys.readouterr().out
    assert "\nconfig: 1 difference\n  optimizer.peak_lr: 0.003 -> 0.001\n" in out
    for section in ("packages", "data", "topology"):  # code: other helpers may edit the tree
        assert f"\n{section}: same (" in out, out
    assert losses(d)[0] == losses(original)[0] and losses(d)[-1] != losses(original)[-1]


def test_a_resumed_launch_appends_its_record(tmp_path):
    workdir = str(tmp_path / "r")
    local.main(["prog", *TINY[:6], "--exp.train.steps=2", *TINY[7:], f"--workdir={workdir}"])
    local.main(["prog", f"--reproduce={workdir}", "--exp.train.steps=3", f"--workdir={workdir}"])
    first, second = runs.read(workdir)
    assert (first["launch"], second["launch"]) == (1, 2)
    assert second["resume"] == {"start": "checkpoint", "step": 2}
    assert second["result"]["step"] == 3 and second["status"] == "completed"
    assert diff.compare(first, second)["config"] == ["train.steps: 2 -> 3"]


def fingerprint_of(store: str) -> str:
    with open(os.path.join(store, "manifest.json")) as f:
        return json.load(f)["fingerprint"]


def write_mixture(tmp_path, store: str) -> str:
    path = tmp_path / "one_store.py"
    path.write_text("from phi4_jax.data.mixture import Mixture, Source, Stage\n"
                    f"MIXTURE = Mixture(name='one_store', total_tokens=256, sources=(Source("
                    f"'web', {store!r}),), stages=(Stage({{'web': 1.0}}),))\n")
    return str(path)


@pytest.fixture(scope="module")
def store_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    store = str(root / "web")
    random_store(store, "web", 40, 200, seed=1)
    mixture = write_mixture(root, store)
    workdir = str(root / "run")
    local.main(["prog", "--exp=tiny_pretrain", "--exp.data.source=mixture",
                f"--exp.data.mixture={mixture}", "--exp.data.seq_len=32",
                "--exp.train.global_batch=8", "--exp.train.loss_vocab_chunks=1",
                "--exp.train.steps=1", "--exp.optimizer.warmup_steps=1",
                "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=False",
                f"--workdir={workdir}"])
    return workdir, store, mixture


def test_a_changed_token_store_is_flagged_and_refused_under_strict(store_run, tmp_path):
    workdir, store, mixture = store_run
    record = runs.select(workdir)
    fingerprint = fingerprint_of(store)
    assert record["data"]["stores"]["web"]["fingerprint"] == fingerprint
    assert record["data"]["files"][mixture]["sha256"]  # the mixture file is an input too
    config = reproduce.experiment_config(record)
    unchanged = reproduce.check(workdir, record, config, strict=False, out=io.StringIO(),
                                stores=mixture_stores(config.data))
    assert not [line for line in unchanged if not line.startswith("code:")]  # code may move
    random_store(store, "web", 40, 200, seed=2)  # same name and path, other content
    changed = fingerprint_of(store)
    out = io.StringIO()
    found = reproduce.check(workdir, record, config, strict=False, out=out,
                            stores=mixture_stores(config.data))
    assert [line for line in found if line.startswith("data:")] == [
        f"data: store web at {store}: fingerprint {fingerprint[:16]} -> {changed[:16]}"]
    assert f"warning: reproducing {workdir}@1: data: store web" in out.getvalue()
    new = str(tmp_path / "new")
    with pytest.raises(cli.UsageError, match=r"--strict: .*store web at .*: fingerprint"):
        local.main(["prog", f"--reproduce={workdir}", f"--workdir={new}", "--strict"])
    assert not os.path.exists(new)  # refused before anything ran
    proc = _run(["-m", "launch.local", f"--reproduce={workdir}", f"--workdir={new}",
                 "--strict"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("python -m launch.local: error: --strict: ") and "store web" in line


def test_a_store_rewritten_in_place_is_flagged(store_run):
    workdir, store, _ = store_run
    record = runs.select(workdir)
    random_store(store, "web", 40, 200, seed=1)  # the recorded content again
    tokens = os.path.join(store, "tokens.bin")
    with open(tokens, "r+b") as f:  # ... then changed under its unchanged manifest
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 1]))
    config = reproduce.experiment_config(record)
    found = reproduce.check(workdir, record, config, strict=False, out=io.StringIO(),
                            stores=mixture_stores(config.data))
    assert [line for line in found if line.startswith("data:")] == [
        f"data: store web at {store}: fingerprint "
        f"{record['data']['stores']['web']['fingerprint'][:16]} -> \"changed_in_place\""]


def test_reproduce_user_errors():
    with pytest.raises(cli.UsageError, match="no run records"):
        local.parse(["prog", "--reproduce=/nonexistent/run", "--workdir=/tmp/x"])
    with pytest.raises(cli.UsageError, match="--reproduce and --exp: give one"):
        local.parse(["prog", "--reproduce=/nonexistent/run", "--exp=tiny_pretrain",
                     "--workdir=/tmp/x"])
    with pytest.raises(cli.UsageError, match="--strict applies to --reproduce"):
        local.parse(["prog", "--exp=tiny_pretrain", "--workdir=/tmp/x", "--strict"])


def test_data_and_posttrain_jobs_write_records(tmp_path):
    seeds = tmp_path / "trivia.jsonl"
    seeds.write_text(json.dumps(SEEDS[2]) + "\n")
    out = tmp_path / "refusal"
    with ScriptedServer(respond) as server:
        assert refusal_main(["--input", str(seeds), "--output", str(out), "--base_url",
                             server.url, "--model", "policy", "--num_samples", "4",
                             "--max_tokens", "64", "--quiet"]) == 0
    (record,) = runs.read(str(out))
    assert record["job"] == "python -m phi4_jax.posttrain.refusal" and record["kind"] == "job"
    assert record["data"]["files"][str(seeds)]["sha256"] == runs.collect.sha256_file(str(seeds))
    assert record["config"]["num_samples"] == 4 and record["command"]["argv"][1] == "--input"

    text = tmp_path / "docs.txt"
    text.write_text("one document\n\nanother one\n")
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "phi4_jax.data.prepare", f"--input={text}",
                           f"--output={store}", "--source_name=docs", "--format=text"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = runs.read(str(store))
    assert record["job"] == "python -m phi4_jax.data.prepare" and record["status"] == "ended"
    assert record["data"]["files"][str(text)]["sha256"] == runs.collect.sha256_file(str(text))
    assert record["config"]["source_name"] == "docs"


@pytest.mark.slow
def test_reruns_on_the_embedded_mixture_are_bitwise_identical(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    local.main(["prog", "--exp=tiny_pretrain", "--exp.data.seq_len=32", "--exp.train.steps=2",
                "--exp.optimizer.warmup_steps=1", "--exp.train.log_every=1",
                "--exp.train.peak_flops=1e12", "--exp.log.tensorboard=False", f"--workdir={a}"])
    local.main(["prog", f"--reproduce={a}", f"--workdir={b}"])
    assert len(losses(a)) == 2 and losses(a) == losses(b)
    stores = runs.select(a)["data"]["stores"]
    assert sorted(stores) == ["acquired", "code", "synthetic", "web", "web_rewrites"]
    assert stores == runs.select(b)["data"]["stores"]


def test_tpu_workers_rerun_the_record_at_its_commit(tmp_path):
    from launch import tpu
    from tests.launch.test_tpu import REPO, printed, worker_argv

    config, _ = local.parse(["prog", *TINY, "--workdir=/unused"])
    source = str(tmp_path / "source")
    runs.history.append(source, {"id": "r", "kind": "train", "job": "train",
                                 "config": json.loads(config.to_json_best_effort()),
                                 "code": {"commit": "f" * 40, "dirty": False}})
    *_, ssh = printed(["prog", f"--reproduce={source}", "--strict", "--exp.train.seed=7",
                       "--workdir=gs://bucket/again", "--tpu=v5p-8", "--zone=z",
                       f"--repo={REPO}"])
    (script,) = [a[len("--command="):] for a in ssh if a.startswith("--command=")]
    assert f"git checkout --quiet --force {'f' * 40}" in script  # the record's commit
    job = worker_argv(script)
    assert {f"--reproduce={source}", "--strict", "--exp.train.seed=7"} <= set(job)
    there = tpu.parse(["prog", *job[3:]])
    assert there.exp.train.seed == 7 and there.strict and there.worker
    there.exp.train.seed = 0
    assert json.loads(there.exp.to_json_best_effort()) == runs.select(source)["config"]
