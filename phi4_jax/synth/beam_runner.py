"""The Apache Beam runner: each pending shard goes through every stage on one worker.

    run_workflow(wf, "out/qa", runner="FnApiRunner")        # Beam's local batch runner
    run_workflow(wf, "out/qa", runner="DataflowRunner", beam_args=["--project=P", ...])

The driver plans (source shards, revisions, fingerprints) and finishes (stage markers, exports,
manifest); the pipeline is `Create(pending shard ids) | Reshuffle | ParDo(RunShard)`. A worker
runs the stages of its shard in order, skipping those whose marker is current, with its own
clients (concurrency and rpm limits are per worker process) and the one cache file (SQLite: any
number of worker processes on one machine). The shard files and markers are the same as the
in-process runner's, so both give the same manifest. Counters: `phi4_synth/{records,requests,
cache_hits,samples,retries,failures,rejects}`, and a log line per shard with shards done,
elapsed time and ETA.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from phi4_jax import cli

cli.quiet_library_noise()  # before Beam's import logs "apitools not found"

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from phi4_jax.synth import runner  # noqa: E402
from phi4_jax.synth.client import ClientStats  # noqa: E402

log = logging.getLogger("phi4_jax.synth")
COUNTERS = ("records", "rejects") + tuple(f.name for f in dataclasses.fields(ClientStats))


async def run_shard(p: runner.Plan, index: int) -> dict[str, int]:
    """Every stage of the workflow over shard `index` (current ones skipped); counts."""
    clients = runner.make_clients(p)
    counts = {"records": 0, "rejects": 0}

    def on_record(result):
        counts["records"] += 1
        counts["rejects"] += result[1] is not None

    try:
        for stage in p.workflow.stages:
            if index in runner.pending(p, stage):
                await runner.run_stage_shard(p, stage, index, clients, on_record)
    finally:
        await runner.close_clients(clients)
    stats = runner.clients_stats(clients)
    return {**counts, **dataclasses.asdict(stats)}


class RunShard(beam.DoFn):
    def __init__(self, p: runner.Plan, num_pending: int):
        self.plan, self.num_pending = p, num_pending
        self.counters = {k: beam.metrics.Metrics.counter("phi4_synth", k) for k in COUNTERS}

    def setup(self):
        self.started, self.done = time.time(), 0

    def process(self, index):
        counts = asyncio.run(run_shard(self.plan, index))
        for k, v in counts.items():
            self.counters[k].inc(v)
        self.done += 1
        elapsed = time.time() - self.started
        log.info("[%s] shard %d: %d records, %d rejects, %d requests, %d cached; this worker "
                 "%d shards in %.0fs (ETA of the %d pending at this rate: %.0fs)",
                 self.plan.workflow.name, index, counts["records"], counts["rejects"],
                 counts["requests"], counts["cache_hits"], self.done, elapsed,
                 self.num_pending, elapsed / self.done * max(self.num_pending - self.done, 0))
        yield index


def run_beam(p: runner.Plan, *, runner_name: str = "FnApiRunner",
             beam_args: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Runs the pending shards as a Beam pipeline; returns this run's counts (workflow-wide,
    under the key "all")."""
    todo = sorted({i for s in p.workflow.stages for i in runner.pending(p, s)})
    start = time.perf_counter()
    totals = dict.fromkeys(COUNTERS, 0)
    if todo:
        options = PipelineOptions([f"--runner={runner_name}", *beam_args])
        pipeline = beam.Pipeline(options=options)
        _ = (pipeline | "Shards" >> beam.Create(todo) | "Spread" >> beam.Reshuffle()
             | "Run" >> beam.ParDo(RunShard(p, len(todo))))
        result = pipeline.run()
        result.wait_until_finish()
        try:
            for c in result.metrics().query()["counters"]:
                if c.key.metric.namespace == "phi4_synth":
                    totals[c.key.metric.name] += c.committed or c.attempted or 0
        except Exception as e:  # noqa: BLE001 - counts are informative; some runners lack them
            log.warning("cannot read the pipeline's counters: %s", e)
    return {"all": {"shards_run": len(todo), "shards_skipped": p.num_shards - len(todo),
                    "seconds": time.perf_counter() - start, **totals}}

