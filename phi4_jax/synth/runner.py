"""Running a workflow: the plan, one stage over one shard, the in-process runner, the finish.

    result = run_workflow(workflow, "out/qa")                    # in-process, progress bars
    result = run_workflow(workflow, "out/qa", runner="FnApiRunner")   # Apache Beam
    result.stats["answer"]["requests"], result.manifest["stages"]["answer"]["records"]
    for record in result.records("grade"): ...

`plan` splits the input into source shards, asks each server its model's revision (models with
revision "auto"), and fingerprints every stage. Work is one stage over one shard
(`run_stage_shard`): its records are processed concurrently (the clients bound the requests in
flight), written in input order with the rejects, then the shard's marker. A shard whose marker
carries the stage's fingerprint is skipped, so rerunning after a kill redoes only unmarked
shards, and their requests that had succeeded come from the cache. The in-process runner goes
stage by stage (all shards of a stage concurrently, a tqdm bar per stage with rate, ETA, cache
hits and failures); the Beam runner (`beam_runner`) sends each shard through every stage on a
worker. `finish` writes the stage markers and reports, the exports and, last, the manifest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from phi4_jax.io import BadInputReport
from phi4_jax.synth import shards as sh
from phi4_jax.synth.cache import ResponseCache, canonical_json, sha256_hex
from phi4_jax.synth.client import ClientStats, LLMClient, RequestError, server_revision
from phi4_jax.synth.stage import Reject, Stage, StageContext, stage_fingerprint
from phi4_jax.synth.templates import TemplateError
from phi4_jax.synth.workflow import Workflow, input_files

REJECT_REASONS = {
    "request_failed": "requests failed after every retry (429 / 5xx / timeouts / dropped "
                      "connections / truncated replies); asked again by the next run",
    "request_refused": "the server refused the request with a 4xx other than 429",
    "unparseable_reply": "the model's reply could not be parsed (after its re-asks)",
    "missing_field": "the record lacks a field the template uses",
    "stage_error": "the stage function raised, or returned something that is not records",
}


@dataclasses.dataclass
class Plan:
    """Everything a worker needs to run any shard of any stage (picklable)."""

    workflow: Workflow
    output: str
    cache_path: str
    num_shards: int
    parents: dict[str, str | None]
    fingerprints: dict[str, str]
    revisions: dict[str, str | None]
    source: dict[str, Any]


@dataclasses.dataclass
class RunResult:
    output: str
    manifest: dict[str, Any]
    stats: dict[str, dict[str, Any]]  # stage -> counts of this run (requests, cache hits, ...)
    num_shards: int

    def records(self, stage: str) -> Iterator[dict[str, Any]]:
        return sh.stage_records(self.output, stage, self.num_shards)


def plan(workflow: Workflow, output: str) -> Plan:
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    sh.remove_temp_files(output)
    source = sh.write_source(output, input_files(workflow.inputs), id_field=workflow.id_field,
                             shard_size=workflow.shard_size)
    revisions = {}
    for name, model in sorted(workflow.models.items()):
        revisions[name] = (asyncio.run(server_revision(model)) if model.revision == "auto"
                           else model.revision)
    models = {name: {"model": m.model, "revision": revisions[name]}
              for name, m in workflow.models.items()}
    parents, fingerprints = workflow.parents(), {}
    for stage in workflow.stages:
        parent = parents[stage.name]
        fingerprints[stage.name] = stage_fingerprint(
            stage, models=models,
            input_fingerprint=source["fingerprint"] if parent is None else fingerprints[parent])
    cache = workflow.cache or os.path.join(output, "cache.sqlite")
    return Plan(workflow, output, os.path.abspath(cache), len(source["shards"]), parents,
                fingerprints, revisions, source)


def make_clients(p: Plan) -> dict[str, LLMClient]:
    if not p.workflow.models:  # stages that ask no server (PTS): no cache file is made
        return {}
    cache = ResponseCache(p.cache_path)
    return {name: LLMClient(m, cache=cache, revision=p.revisions[name])
            for name, m in p.workflow.models.items()}


async def close_clients(clients: Mapping[str, LLMClient]) -> None:
    """Closes the HTTP clients, then their cache (its writer thread)."""
    for c in clients.values():
        await c.aclose()
    for cache in {id(c.cache): c.cache for c in clients.values() if c.cache}.values():
        cache.close()


def clients_stats(clients: Mapping[str, LLMClient]) -> ClientStats:
    total = ClientStats()
    for c in clients.values():
        total.add(c.stats)
    return total


async def _one(stage: Stage, clients: Mapping[str, LLMClient], record: dict[str, Any],
               id_field: str) -> tuple[list[dict[str, Any]], tuple[str, str] | None, bool]:
    """(outputs, (reason, detail) or None, transient) of one record (the function may change
    `record`: it was read for this call alone)."""
    rid, record_id = str(record[id_field]), record[id_field]
    ctx = StageContext(stage, clients, rid)
    try:
        out = await stage.fn(record, ctx)
        if out is None:
            return [], None, ctx.retry
        outs = [out] if isinstance(out, dict) else out
        if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
            raise TypeError(f"returned {type(out).__name__}, not a dict, a list of dicts "
                            "or None")
        single = isinstance(out, dict)
        outs = [o if id_field in o else {**o, id_field: record_id if single else f"{rid}/{k}"}
                for k, o in enumerate(outs)]
        for o in outs:
            canonical_json(o)  # JSON values only
        return outs, None, ctx.retry
    except Reject as e:
        return [], (e.reason, e.detail), False
    except RequestError as e:
        return [], ("request_failed" if e.transient else "request_refused", str(e)), e.transient
    except TemplateError as e:
        return [], ("missing_field", str(e)), False
    except Exception as e:  # noqa: BLE001 - one record never stops a run
        return [], ("stage_error", f"{type(e).__name__}: {e}"), False


async def run_stage_shard(p: Plan, stage: Stage, index: int, clients: Mapping[str, LLMClient],
                          on_record: Any = None) -> dict[str, Any]:
    """Runs `stage` over shard `index` and writes it (records, rejects, marker)."""
    parent = p.parents[stage.name]
    path = sh.shard_file(p.output, parent, index)
    where = os.path.relpath(path, p.output)
    with open(path, "rb") as f:
        data = f.read()
    input_sha256 = sha256_hex(data)
    records = [json.loads(x) for x in data.decode("utf-8").splitlines() if x.strip()]
    id_field = p.workflow.id_field

    async def one(record: dict[str, Any]) -> Any:
        result = await _one(stage, clients, record, id_field)
        sh.kill_point("record")
        if on_record is not None:
            on_record(result)
        return result

    ids = [r[id_field] for r in records]
    results = await asyncio.gather(*[one(r) for r in records])
    report = BadInputReport()
    out, rejects, dropped, transient = [], [], 0, 0
    for line_no, (record_id, (outs, reject, is_transient)) in enumerate(zip(ids, results), 1):
        if reject is None:
            report.ok(where)
            out += outs
            dropped += not outs
            transient += is_transient  # ctx.retry_later(): kept, and redone by the next run
            continue
        reason, detail = reject
        report.bad(where, reason, f"{where}:{line_no}", detail)
        rejects.append({"stage": stage.name, "id": record_id, "reason": reason,
                        "where": f"{where}:{line_no}", "detail": detail[:1000]})
        transient += is_transient
    return await asyncio.to_thread(  # fsyncs: off the event loop
        sh.write_shard, p.output, stage.name, index, p.fingerprints[stage.name], input_sha256,
        out, rejects,
        dropped=dropped, transient=transient, report=report)


def input_sha256(p: Plan, stage: Stage, index: int) -> str | None:
    """The sha256 of the shard the stage reads now (None: its parent's shard is not done)."""
    parent = p.parents[stage.name]
    if parent is None:
        return p.source["shards"][index]["sha256"]
    marker = sh.read_json(sh.shard_file(p.output, parent, index, ".done"))
    return marker["sha256"] if marker else None


def pending(p: Plan, stage: Stage, *, retry_transient: bool = True) -> list[int]:
    """The shards of `stage` to (re)compute now: no current marker, or (`retry_transient`)
    one with records whose requests failed after every retry -- the next run asks those again
    (the rest come from the cache) and the stages after it then see a new input shard."""
    fp, out = p.fingerprints[stage.name], []
    for i in range(p.num_shards):
        marker = sh.current_marker(p.output, stage.name, i, fp, input_sha256(p, stage, i))
        if marker is None or (retry_transient and marker["transient_failures"]):
            out.append(i)
    return out


def _input_counts(p: Plan, stage: Stage) -> list[int]:
    parent = p.parents[stage.name]
    if parent is None:
        return [s["records"] for s in p.source["shards"]]
    return [sh.read_json(sh.shard_file(p.output, parent, i, ".done"))["records"]
            for i in range(p.num_shards)]


async def run_inprocess(p: Plan, *, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Stage by stage, all pending shards of a stage at once (bounded); returns stats."""
    from tqdm import tqdm

    clients = make_clients(p)
    concurrency = sum(m.concurrency for m in p.workflow.models.values()) or 1
    open_shards = asyncio.Semaphore(2 + math.ceil(2 * concurrency / p.workflow.shard_size))
    stats: dict[str, dict[str, Any]] = {}
    try:
        for stage in p.workflow.stages:
            todo, counts = pending(p, stage), _input_counts(p, stage)
            before, start = dataclasses.replace(clients_stats(clients)), time.perf_counter()
            bar = tqdm(total=sum(counts), desc=stage.name, unit="rec", disable=not progress,
                       dynamic_ncols=True)
            bar.update(sum(counts) - sum(counts[i] for i in todo))
            tally = {"rejects": 0, "done": 0}

            def on_record(result, bar=bar, tally=tally, before=before):
                tally["done"] += 1
                tally["rejects"] += result[1] is not None
                bar.update(1)
                if tally["done"] % 64 == 0:
                    now = clients_stats(clients)
                    bar.set_postfix_str(f"cached={now.cache_hits - before.cache_hits} "
                                        f"asked={now.samples - before.samples} "
                                        f"failed={tally['rejects']}", refresh=False)

            async def shard(i, stage=stage, on_record=on_record):
                async with open_shards:
                    await run_stage_shard(p, stage, i, clients, on_record)

            await asyncio.gather(*[shard(i) for i in todo])
            after = clients_stats(clients)
            bar.set_postfix_str(f"cached={after.cache_hits - before.cache_hits} "
                                f"asked={after.samples - before.samples} "
                                f"failed={tally['rejects']}")
            bar.close()
            stats[stage.name] = {
                "shards_run": len(todo), "shards_skipped": p.num_shards - len(todo),
                "records_processed": tally["done"], "rejects_this_run": tally["rejects"],
                "seconds": time.perf_counter() - start,
                **{f.name: getattr(after, f.name) - getattr(before, f.name)
                   for f in dataclasses.fields(ClientStats)}}
    finally:
        await close_clients(clients)
    return stats


def finish(p: Plan) -> dict[str, Any]:
    """Stage markers and reports, exports, then the manifest (every shard must be done)."""
    for s in p.workflow.stages:
        if missing := pending(p, s, retry_transient=False):
            raise RuntimeError(f"stage {s.name}: shards {missing[:10]} are not done; rerun "
                               "the same command to resume")
    stages = {s.name: sh.finish_stage(p.output, s.name, p.parents[s.name],
                                      p.fingerprints[s.name], p.num_shards)
              for s in p.workflow.stages}
    exports = {stage: sh.write_export(p.output, stage, name, p.num_shards)
               for stage, name in sorted(p.workflow.exports.items())}
    manifest = {"workflow": p.workflow.name,
                "models": {k: {"model": m.model, "revision": p.revisions[k]}
                           for k, m in sorted(p.workflow.models.items())},
                "source": {k: p.source[k] for k in ("fingerprint", "records", "rejects",
                                                    "rejects_sha256", "shards")},
                "stages": stages, "exports": exports}
    sh.write_manifest(p.output, manifest)
    return manifest


def run_workflow(workflow: Workflow, output: str, *, runner: str = "inprocess",
                 beam_args: Sequence[str] = (), progress: bool = True) -> RunResult:
    """Runs (or resumes) `workflow` into `output`. runner: 'inprocess', or a Beam runner name
    (FnApiRunner, DirectRunner, DataflowRunner, ...) with `beam_args` as pipeline flags."""
    p = plan(workflow, output)
    if runner == "inprocess":
        stats = asyncio.run(run_inprocess(p, progress=progress))
    else:
        from phi4_jax.synth import beam_runner

        stats = beam_runner.run_beam(p, runner_name=runner, beam_args=beam_args)
    return RunResult(p.output, finish(p), stats, p.num_shards)
