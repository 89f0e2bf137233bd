"""Kill -9 at many points, rerun: the output is byte-identical to an uninterrupted run; a
finished workflow makes no request; a changed template re-asks only its stage."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from phi4_jax import synth
from tests.synth import engine_stages as es
from tests.synth.scripted_server import ScriptedServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
# source:2 while splitting the input, record:5 in `answer`, record:20 in `vote`, shard:4
# between a shard file and its marker, marker:7 in `check`, stage:2 between stage markers,
# manifest just before the manifest.
KILL_POINTS = ["source:2", "record:5", "record:20", "shard:4", "marker:7", "stage:2",
               "manifest"]


def cli(config: str, output: str, *extra: str, kill: str | None = None
        ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PHI4_SYNTH_KILL_AT"}
    if kill:
        env["PHI4_SYNTH_KILL_AT"] = kill
    return subprocess.run([sys.executable, "-m", "phi4_jax.synth.run", config,
                           f"--output={output}", "--quiet", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The test workflow run once without interruption (in-process) and its server."""
    folder = tmp_path_factory.mktemp("engine")
    with ScriptedServer() as server:
        config = es.write_config(str(folder), server.url)
        done = cli(config, str(folder / "reference"))
        assert done.returncode == 0, done.stderr
        yield folder, config, server, es.tree(str(folder / "reference"))


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_kill_9_then_rerun_gives_the_same_bytes(reference, kill):
    folder, config, server, expected = reference
    output = str(folder / f"killed-{kill.replace(':', '-')}")
    killed = cli(config, output, kill=kill)
    assert killed.returncode == -9, killed.stderr
    assert not os.path.exists(os.path.join(output, "manifest.json"))
    resumed = cli(config, output)
    assert resumed.returncode == 0, resumed.stderr
    assert es.tree(output) == expected
    assert not [p for p in es.tree(output) if ".tmp-" in p]


def test_a_finished_workflow_makes_no_request(reference):
    folder, config, server, expected = reference
    output = str(folder / "again")
    shutil.copytree(folder / "reference", output)
    before, gets = server.generations, server.gets
    done = cli(config, output)
    assert done.returncode == 0, done.stderr
    assert server.generations == before  # not one completion request
    assert server.gets == gets + 1  # the one GET /v1/models that reads the revision
    assert "0 requests this run" in done.stdout
    assert es.tree(output) == expected


def test_a_changed_template_re_asks_only_its_stage(tmp_path):
    with ScriptedServer() as server:
        config = es.write_config(str(tmp_path), server.url)
        workflow = synth.load_workflow(config)
        first = synth.run_workflow(workflow, str(tmp_path / "out"), progress=False)
        es.write_config(str(tmp_path), server.url, vote_template="Vote again: ${question}\n")
        changed = synth.run_workflow(synth.load_workflow(config), str(tmp_path / "out"),
                                     progress=False)
    assert first.stats["answer"]["requests"] == 12 and first.stats["vote"]["requests"] == 12
    assert changed.stats["answer"]["shards_run"] == 0 and changed.stats["answer"]["requests"] == 0
    assert changed.stats["vote"]["requests"] == 12  # every vote prompt changed
    assert changed.stats["check"]["requests"] == 0
    votes = [r["votes"][0] for r in changed.records("check")]
    assert all(v.startswith("scripted|Vote again: ") for v in votes)
    assert (changed.manifest["stages"]["answer"]["fingerprint"]
            == first.manifest["stages"]["answer"]["fingerprint"])
    assert (changed.manifest["stages"]["vote"]["fingerprint"]
            != first.manifest["stages"]["vote"]["fingerprint"])


def test_user_errors_are_one_line(tmp_path):
    missing = cli(str(tmp_path / "nope.py"), str(tmp_path / "out"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"python -m phi4_jax.synth.run: error: {tmp_path / 'nope.py'}: no such config file"]
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    return {'stages': [{'name': 'a', 'kind': 'chat'}],"
                   " 'inputs': []}\n")
    wrong = cli(str(bad), str(tmp_path / "out"))
    assert wrong.returncode == 2 and "needs template" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1


def test_the_example_workflow_builds_and_runs(tmp_path):
    """workflows/qa_critique.py against the scripted server: the critic accepts questions."""
    import importlib

    from tests.synth.scripted_server import echo

    def reply(body, index):
        system = body.get("messages", [{}])[0].get("content", "")
        if system.startswith("You review answers"):
            accepted = "?" in body["messages"][-1]["content"].split("\n")[0]
            return json.dumps({"correct": accepted, "issue": "" if accepted else "odd"})
        return echo(body, index)

    module = importlib.import_module("workflows.qa_critique")
    with ScriptedServer(reply=reply, model="smollm2") as server:
        config = module.get_config("local")
        config["models"]["teacher"]["base_url"] = server.url
        workflow = synth.from_config(config, str(ROOT / "workflows"))
        result = synth.run_workflow(workflow, str(tmp_path / "out"), progress=False)
    stages = result.manifest["stages"]
    assert stages["answer"]["records"] == 6 and stages["critique"]["rejects"] == 0
    # one of the six is not a question: rejected by the validator stage, with its reason
    assert (stages["accepted"]["records"], stages["accepted"]["rejects"]) == (5, 1)
    rejects = (tmp_path / "out/stages/accepted/shard-00000.rejects.jsonl").read_text()
    assert '"id":"q1"' in rejects and '"reason":"critic_rejected"' in rejects
    assert stages["continuations"]["input"] == "source"
    rows = [json.loads(x) for x in (tmp_path / "out/continuations.jsonl").read_text().split("\n")
            if x]
    assert len(rows) == 6 and all(len(r["continuations"]) == 4 for r in rows)
