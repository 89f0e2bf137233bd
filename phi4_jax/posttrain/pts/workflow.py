"""Pivotal Token Search as a workflow on the data-workflow engine (`phi4_jax.synth`).

    OUT/config.json                the search configuration (a rerun under another is refused)
    OUT/problems.jsonl             the questions with their prompt ids: the workflow's input
    OUT/source/shard-*.jsonl       the engine's source shards (shard_size questions each)
    OUT/stages/search/shard-*      one result per question, rejects, completion markers,
                                   report.txt / report.json; _SUCCESS.json when all are done
    OUT/manifest.json              written last (the engine's; then pivots.jsonl, pairs.jsonl)

One stage, `search`: a question -> {id, p, searched, solutions, oracle_calls, pivots, pairs}
(pivots and pairs as `phi4_jax.posttrain.records` JSON). The stage works with the in-process
sampler: the questions of the open shards queue up and `Searcher` takes them `batch_questions`
at a time into one `search_batch` call (one sampler call per depth for the whole batch). That
call runs on the event loop's thread -- the main thread, where math-verify's timeouts work;
the loop has nothing else to do, as PTS asks no server (the workflow has no models, so the
engine's clients and request cache are unused). A question's result depends on that question
alone (p memoized per question and prefix, rollouts keyed by prefix and index), not on which
others share its batch, so a resumed run's shards are byte-identical to an uninterrupted run's.

Rejects: `oracle_error` (the oracle raised ValueError for the question, e.g. an unparsable gold
answer: not searched, never retried) and `request_failed` (the sampler or the oracle raised
anything else: the question's shard is redone by the next run). Neither stops the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from phi4_jax import synth
from phi4_jax.io import atomic_write_json, atomic_write_text
from phi4_jax.posttrain.pts.oracles import Oracle, Question
from phi4_jax.posttrain.pts.search import Problem, PTSConfig, QuestionResult, Stats, search_batch
from phi4_jax.posttrain.sampler import Sampler

STAGE = "search"
STAGE_VERSION = "1"  # bump when search.py changes what a question's result is: shards redone
PROBLEMS = "problems.jsonl"
_SEARCHER: contextvars.ContextVar[Searcher] = contextvars.ContextVar("pts_searcher")


class OutputDirError(ValueError):
    """--out holds another search (another configuration, or the earlier runner's files)."""


def search_config(config: PTSConfig, sampler: Sampler) -> dict[str, Any]:
    """Everything that shapes a question's result besides the question: config.json and the
    stage's parameters (so its fingerprint). Batch sizes are left out: they change no result."""
    out = dataclasses.asdict(config) | {"tokenizer": sampler.tokenizer_name}
    settings = getattr(sampler, "settings", None)
    return out | ({"sampler": settings()} if callable(settings) else {})


def check_output_dir(out_dir: str, cfg: dict[str, Any]) -> None:
    """Writes OUT/config.json, or refuses (OutputDirError) an OUT started under another."""
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(os.path.join(out_dir, "state.jsonl")):
        raise OutputDirError(f"{out_dir}: written by the earlier PTS runner (state.jsonl), "
                             "which this one does not resume; use a new --out")
    path = os.path.join(out_dir, "config.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != cfg:
            raise OutputDirError(f"{path}: this run's configuration {cfg} differs from the "
                                 f"one the directory was started with {old}; use a new --out")
    else:
        atomic_write_json(path, cfg, indent=1)


def problem_record(problem: Problem) -> dict[str, Any]:
    q = dataclasses.asdict(problem.question)
    return {**q, "choices": list(q["choices"]), "prompt_ids": list(problem.prompt_ids),
            "reply_start": problem.reply_start}


def problem_from_record(record: dict[str, Any]) -> Problem:
    fields = {f.name: record[f.name] for f in dataclasses.fields(Question) if f.name in record}
    question = Question(**{**fields, "choices": tuple(fields.get("choices", ()))})
    return Problem(question, tuple(record["prompt_ids"]), int(record["reply_start"]))


def write_problems(out_dir: str, problems: Sequence[Problem]) -> str:
    """OUT/problems.jsonl (rewritten only when it changes)."""
    path = os.path.join(out_dir, PROBLEMS)
    text = "".join(json.dumps(problem_record(p), sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False) + "\n" for p in problems)
    try:
        with open(path, encoding="utf-8") as f:
            same = f.read() == text
    except OSError:
        same = False
    if not same:
        atomic_write_text(path, text)
    return path


class Searcher:
    """Batches the questions the stage is given into `search_batch` calls; counts this run's
    work (`stats`, `searched`, `pivots`, `pairs`)."""

    def __init__(self, sampler: Sampler, oracle: Oracle, config: PTSConfig,
                 batch_questions: int):
        self.sampler, self.oracle, self.config = sampler, oracle, config
        self.batch_questions = max(1, batch_questions)
        self.queue: list[tuple[Problem, asyncio.Future]] = []
        self.drainer: asyncio.Task | None = None
        self.stats, self.searched, self.pivots, self.pairs = Stats(), 0, 0, 0

    async def search(self, problem: Problem) -> tuple[QuestionResult, int]:
        """The question's result and its oracle calls (searched in a batch with others)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append((problem, future))
        if self.drainer is None or self.drainer.done():
            self.drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self.queue:
            await asyncio.sleep(0)  # the other questions of the open shards queue up first
            batch = self.queue[:self.batch_questions]
            del self.queue[:len(batch)]
            stats = Stats()
            try:  # blocking, on the loop's (main) thread: see the module docstring
                results = search_batch([p for p, _ in batch], self.sampler, self.oracle,
                                       self.config, stats)
            except Exception as e:  # noqa: BLE001 - each question of the batch reports it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for name in ("oracle_calls", "prefix_evals", "rows_sampled"):
                setattr(self.stats, name, getattr(self.stats, name) + getattr(stats, name))
            for (_, future), r in zip(batch, results):
                self.searched += r.searched
                self.pivots += len(r.pivots)
                self.pairs += len(r.pairs)
                if not future.done():
                    future.set_result((r, stats.per_question.get(r.question_id, 0)))


async def search_question(record: dict[str, Any], ctx: synth.StageContext) -> dict[str, Any]:
    """The `search` stage: one question's PTS result (module docstring)."""
    try:
        searcher = _SEARCHER.get(None)
        if searcher is None:
            raise RuntimeError("the PTS stage runs in-process, under run_search")
        result, calls = await searcher.search(problem_from_record(record))
    except Exception as e:  # noqa: BLE001 - a failed search is asked again by the next run
        raise synth.RequestError(ctx.record_id, f"search failed: {type(e).__name__}: {e}",
                                 transient=True) from e
    if result.error is not None:
        raise synth.Reject("oracle_error", result.error)
    return {"id": record["id"], "p": result.p, "searched": result.searched,
            "solutions": result.solutions, "oracle_calls": calls,
            "pivots": [p.to_json() for p in result.pivots],
            "pairs": [p.to_json() for p in result.pairs]}


def build_workflow(problems_path: str, cfg: dict[str, Any], shard_size: int) -> synth.Workflow:
    return synth.Workflow(name="pts", inputs=[problems_path], shard_size=shard_size,
                          stages=[synth.Stage(STAGE, search_question, params=cfg,
                                              version=STAGE_VERSION)])


def run_search(problems: Sequence[Problem], sampler: Sampler, oracle: Oracle,
               config: PTSConfig, out_dir: str, *, batch_questions: int = 4,
               shard_size: int = 16, progress: bool = True
               ) -> tuple[synth.RunResult, Searcher]:
    """Runs (or resumes) the search of every question into `out_dir`: the engine's result and
    this run's searcher (its counts). Raises OutputDirError for an OUT of another search."""
    cfg = search_config(config, sampler)
    check_output_dir(out_dir, cfg)
    workflow = build_workflow(write_problems(out_dir, problems), cfg, shard_size)
    searcher = Searcher(sampler, oracle, config, batch_questions)
    token = _SEARCHER.set(searcher)
    try:
        result = synth.run_workflow(workflow, out_dir, progress=progress)
    finally:
        _SEARCHER.reset(token)
    return result, searcher


def results(out_dir: str) -> Iterator[dict[str, Any]]:
    """The `search` records of a finished output directory, in question order."""
    with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    for shard in manifest["stages"][STAGE]["shards"]:
        with open(os.path.join(out_dir, shard["file"]), encoding="utf-8") as f:
            yield from (json.loads(line) for line in f if line.strip())
