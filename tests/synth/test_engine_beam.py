"""The Apache Beam runner: the same bytes as the in-process runner, and kill -9 / resume.

The other tests name FnApiRunner (what DirectRunner runs offline) so that a machine with network
access does not download the Prism runner in each subprocess."""

from __future__ import annotations

import pytest

from phi4_jax import synth
from tests.synth import engine_stages as es
from tests.synth.scripted_server import ScriptedServer
from tests.synth.test_engine_resume import cli


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("beam")
    with ScriptedServer() as server:
        config = es.write_config(str(folder), server.url)
        inprocess = synth.run_workflow(synth.load_workflow(config), str(folder / "inprocess"),
                                       progress=False)
        yield folder, config, server, inprocess


def test_beam_gives_the_in_process_manifest_and_bytes(reference):
    """DirectRunner (offline it runs Beam's FnApiRunner, after the Prism download fails)."""
    folder, config, server, inprocess = reference
    before = server.generations
    beam = synth.run_workflow(synth.load_workflow(config), str(folder / "beam"),
                              runner="DirectRunner", progress=False)
    assert beam.manifest == inprocess.manifest
    assert es.tree(str(folder / "beam")) == es.tree(str(folder / "inprocess"))
    counts = beam.stats["all"]
    assert counts["shards_run"] == 3 and counts["records"] == 36
    # the cache is per output dir here: Beam asked everything again, once
    assert server.generations - before == 24 == counts["requests"]
    again = synth.run_workflow(synth.load_workflow(config), str(folder / "beam"),
                               runner="FnApiRunner", progress=False)
    assert again.stats["all"]["shards_run"] == 0 and server.generations - before == 24


@pytest.mark.parametrize("kill", ["record:6", "marker:4", "manifest"])
def test_beam_kill_9_then_rerun_gives_the_same_bytes(reference, kill):
    folder, config, server, inprocess = reference
    output = str(folder / f"beam-killed-{kill.replace(':', '-')}")
    killed = cli(config, output, "--runner=FnApiRunner", kill=kill)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = cli(config, output, "--runner=FnApiRunner")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert es.tree(output) == es.tree(str(folder / "inprocess"))


def test_beam_with_two_worker_processes_shares_the_cache(reference):
    folder, config, server, inprocess = reference
    output = str(folder / "beam-mp")
    first = cli(config, output, "--runner=FnApiRunner", "--direct_num_workers=2",
                "--direct_running_mode=multi_processing")
    assert first.returncode == 0, first.stderr[-2000:]
    assert es.tree(output) == es.tree(str(folder / "inprocess"))
    before = server.generations
    import shutil

    for stage in ("answer", "vote", "check"):  # drop the outputs, keep the cache
        shutil.rmtree(f"{output}/stages/{stage}")
    again = cli(config, output, "--runner=FnApiRunner", "--direct_num_workers=2",
                "--direct_running_mode=multi_processing")
    assert again.returncode == 0, again.stderr[-2000:]
    assert server.generations == before  # every reply came from the shared cache
    assert es.tree(output) == es.tree(str(folder / "inprocess"))
