"""Run records without training: runs.jsonl appends and selects, collectors hash what they
should, diff names each difference, job records, the TensorBoard text, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from phi4_jax import cli, runs
from phi4_jax.data.store import write_store
from phi4_jax.runs import collect, diff, history, reproduce, tensorboard
from phi4_jax.runs.__main__ import main as runs_main


def fake_record(**changes) -> dict:
    record = {"schema": runs.SCHEMA, "id": "r1", "kind": "train", "job": "train",
              "status": "completed", "command": {"line": "python -m launch.local --exp=x"},
              "config": {"name": "x", "train": {"steps": 3, "seed": 0}, "data": {"seed": 1}},
              "code": {"commit": "abc", "dirty": False, "diff_sha256": None, "untracked": {}},
              "packages": {"python": "3.11.0", "distributions": {"jax": "0.1", "numpy": "2.0"}},
              "data": {"stores": {"web": {"path": "/s/web", "fingerprint": "f" * 64}},
                       "files": {}},
              "topology": {"platform": "cpu", "device_kind": "cpu", "device_count": 8,
                           "mesh": {"data": 1, "fsdp": 8}},
              "environment": {}}
    record.update(changes)
    record.setdefault("seeds", collect.seeds(record["config"]))
    return record


def test_history_appends_updates_and_selects(tmp_path):
    workdir = str(tmp_path / "w")
    with pytest.raises(history.RecordError, match="no run records"):
        history.select(workdir)
    for i in range(3):
        history.append(workdir, {"id": f"r{i}", "n": i})
    history.update(workdir, {"id": "r1", "n": 10})
    assert [(r["id"], r["n"], r["launch"]) for r in history.read(workdir)] == [
        ("r0", 0, 1), ("r1", 10, 2), ("r2", 2, 3)]
    assert history.select(workdir)["id"] == "r2"
    assert history.select(f"{workdir}@1")["id"] == "r0"
    assert history.select(f"{workdir}@-2")["id"] == "r1"
    with pytest.raises(history.RecordError, match="has 3 launch record"):
        history.select(f"{workdir}@4")
    with open(history.path_of(workdir), "a") as f:
        f.write('{"id": "torn", "n"')  # a torn last line is skipped, the next append repairs
    history.append(workdir, {"id": "r3"})
    assert [r["id"] for r in history.read(workdir)] == ["r0", "r1", "r2", "r3"]
    assert history.split_spec("gs://b/run@2") == ("gs://b/run", 2)
    assert history.split_spec("/a@b/c") == ("/a@b/c", None)


def test_history_on_a_url_goes_through_tensorstore(tmp_path):
    url = f"file://{tmp_path}/remote"
    history.append(url, {"id": "a"})
    history.append(url, {"id": "b"})
    history.update(url, {"id": "a", "status": "completed"})
    assert [(r["id"], r.get("status")) for r in history.read(url)] == [("a", "completed"),
                                                                       ("b", None)]
    assert os.path.exists(tmp_path / "remote" / "runs.jsonl")


def test_collectors_hash_files_directories_globs_and_stores(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.json").write_text("{}")
    write_store(str(tmp_path / "store"), "s", [np.arange(5, dtype=np.uint32)])
    found = collect.files([str(tmp_path / "a.txt"), None, f"{tmp_path}/d,{tmp_path}/*.txt",
                           str(tmp_path / "store"), str(tmp_path / "missing"), "gs://b/k"])
    assert found[str(tmp_path / "a.txt")]["sha256"] == collect.sha256_bytes(b"hello")
    assert found[str(tmp_path / "d")]["kind"] == "directory"
    assert found[str(tmp_path / "d")]["files"] == 1
    store = found[str(tmp_path / "store")]
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert store["kind"] == "token_store" and store["fingerprint"] == manifest["fingerprint"]
    assert found[str(tmp_path / "missing")]["error"] == "missing"
    assert found["gs://b/k"]["url"] == "gs://b/k" and "generation" in found["gs://b/k"]
    (tmp_path / "d" / "x.json").write_text("{ }")
    assert collect.files([str(tmp_path / "d")])[str(tmp_path / "d")]["listing_sha256"] != \
        found[str(tmp_path / "d")]["listing_sha256"]
    assert collect.seeds({"train": {"seed": 1}, "data": {"seed": 2, "x": 3},
                          "eval_seed": 4}) == {"data.seed": 2, "eval_seed": 4, "train.seed": 1}
    assert collect.config_inputs({"train": {"init_from": "/ckpt", "reference_from": None},
                                  "dpo": {"pairs": "a.jsonl,b.jsonl"},
                                  "data": {"mixture": "embedded"}}) == ["/ckpt",
                                                                         "a.jsonl,b.jsonl"]


def test_code_and_packages_describe_this_checkout():
    code, packages = collect.code(), collect.packages()
    assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)
    if code["dirty"]:
        assert len(code["diff_sha256"]) == 64
        assert code["diff"] is None or len(code["diff"].encode()) < collect.DIFF_INLINE_BYTES
    assert packages["key"]["jax"] == packages["distributions"]["jax"]
    assert {"numpy", "flax", "optax", "orbax-checkpoint", "grain"} <= set(
        packages["distributions"])


def test_diff_names_each_difference():
    a = fake_record()
    b = fake_record(config={"name": "x", "train": {"steps": 4, "seed": 0}, "data": {"seed": 1},
                            "new": [1, 2]},
                    code={"commit": "def", "dirty": True, "diff_sha256": "9" * 64,
                          "untracked": {"n.py": "1" * 64}},
                    packages={"python": "3.11.0", "distributions": {"jax": "0.2", "tqdm": "4"}},
                    data={"stores": {"web": {"path": "/t/web", "fingerprint": "e" * 64}},
                          "files": {}},
                    topology={**a["topology"], "device_count": 4, "mesh": {"data": 1,
                                                                           "fsdp": 4}})
    found = diff.compare(a, b)
    assert found["config"] == ["new: (absent) -> [1, 2]", "train.steps: 3 -> 4"]
    assert found["code"] == ["commit abc -> def", "dirty false -> true",
                             "uncommitted changes: diff sha256 null -> 9999999999999999"]
    edited = fake_record(code={"commit": "abc", "dirty": True, "diff_sha256": "9" * 64,
                               "changed": {"m.py": "2" * 64}, "untracked": {"n.py": "1" * 64}})
    assert diff.compare(a, edited)["code"] == [
        "dirty false -> true", "uncommitted changes: diff sha256 null -> 9999999999999999",
        "file m.py: (committed) -> 2222222222222222", "file n.py: (committed) -> 1111111111111111"]
    assert found["packages"] == ["changed jax 0.1 -> 0.2", "removed numpy 2.0",
                                 "added tqdm 4"]
    assert found["data"] == ["store web at /t/web: fingerprint ffffffffffffffff -> "
                             "eeeeeeeeeeeeeeee"]
    assert found["topology"] == ["device_count 8 -> 4",
                                 'mesh {"data": 1, "fsdp": 8} -> {"data": 1, "fsdp": 4}']
    moved = fake_record(data={"stores": {"web": {"path": "/elsewhere", "fingerprint": "f" * 64}},
                              "files": {}})
    assert diff.compare(a, moved)["data"] == []  # same content at another path: same data
    text = diff.render(a, a)
    assert "config: same (4 fields)" in text and "code: same (commit abc, clean)" in text


def test_recorded_config_takes_overrides_with_types():
    from absl import flags
    from ml_collections import config_flags

    config = reproduce.experiment_config({"config": {"a": None, "b": {"c": 1, "d": [1, 2]},
                                                     "e": 1.0}})
    argv = ["p", "--exp.a=/x", "--exp.b.c=3", "--exp.e=2", "--exp.b.d=(3,4)"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict("exp", config, flag_values=values, sys_argv=argv)
    values(argv)
    assert values.exp.to_dict() == {"a": "/x", "b": {"c": 3, "d": (3, 4)}, "e": 2.0}
    untouched = reproduce.experiment_config({"config": {"a": None, "d": [1, 2]}})
    assert json.loads(untouched.to_json_best_effort()) == {"a": None, "d": [1, 2]}


def test_job_record_then_its_end(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"q": 1}\n')
    out = str(tmp_path / "out")
    handle = runs.write_job_record(out, job="python -m phi4_jax.posttrain.judge",
                                   argv=["--input", str(source), "--output", out],
                                   config={"input": str(source), "seed": 3, "obj": object()},
                                   inputs=[str(source), None])
    (record,) = runs.read(out)
    assert record["kind"] == "job" and record["status"] == "running" and record["launch"] == 1
    assert record["command"]["line"].startswith("python -m phi4_jax.posttrain.judge --input ")
    assert record["data"]["files"][str(source)]["sha256"] == collect.sha256_file(str(source))
    assert record["seeds"] == {"seed": 3} and isinstance(record["config"]["obj"], str)
    runs.finish(handle, status="ended")
    runs.finish(handle, status="twice")  # once only (the interpreter-exit hook is a no-op)
    (record,) = runs.read(out)
    assert record["status"] == "ended" and record["ended"] >= record["started"]


def test_tensorboard_gets_the_record_as_text_and_hparams(tmp_path):
    record = fake_record(launch=1, started="t0", resume={"step": 0})
    writer = tensorboard.write_start(str(tmp_path), record)
    tensorboard.write_end(writer, record | {"result": {"step": 3}})
    (event,) = (tmp_path / "tensorboard").glob("*.run_record")
    data = event.read_bytes()
    for tag in (b"run_record/summary", b"run_record/config", b"run_record/code",
                b"run_record/packages", b"run_record/data", b"run_record/result",
                b"_hparams_/experiment", b"_hparams_/session_start_info",
                b"_hparams_/session_end_info", b"train.steps", b"train/loss"):
        assert tag in data, tag


def test_cli_show_and_diff(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    history.append(a, fake_record())
    history.append(b, fake_record(config={"name": "x", "train": {"steps": 5, "seed": 0},
                                          "data": {"seed": 1}}))
    assert runs_main(["diff", a, b]) == 0
    out = capsys.readouterr().out
    assert "config: 1 difference\n  train.steps: 3 -> 5\ncode: same" in out
    assert runs_main(["show", a]) == 0
    out = capsys.readouterr().out
    assert "1 launch record(s)" in out and "seeds     data.seed=1 train.seed=0" in out
    assert runs_main(["show", f"{a}@1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "r1"
    with pytest.raises(cli.UsageError, match="no run records"):
        runs_main(["diff", a, str(tmp_path / "none")])
    proc = subprocess.run([sys.executable, "-m", "phi4_jax.runs", "show", str(tmp_path / "z")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("python -m phi4_jax.runs: error: ")
