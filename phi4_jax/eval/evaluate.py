"""Run tasks against a model and write what they found.

    results = evaluate(lm, [load_task("mc:q.jsonl")], EvalConfig(limit=100), output="out/")

Writes OUTPUT/results.json (per task: kind, each metric with its standard error, sample count,
task and model fingerprints, seconds) and OUTPUT/samples/TASK.jsonl (one record per example),
each atomically; with `tensorboard`, OUTPUT/tensorboard holds one scalar per task and metric
(`TASK/METRIC`, step 0). A tqdm bar per task shows progress and its ETA on stderr.

With `decontamination` (a report of `python -m phi4_jax.curate.decontaminate`, read by
`load_decontamination_report`), each task also gets `decontamination`: what the report says of
that benchmark (`decontamination_status`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from phi4_jax.eval import runners
from phi4_jax.eval.tasks import Task
from phi4_jax.io.atomic import atomic_write_text


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    limit: int | None = None  # first N examples of each task
    num_fewshot: int = 0
    seed: int = 0
    n_samples: int = 1  # code: samples per problem
    pass_ks: tuple[int, ...] = (1,)
    temperature: float = 0.0  # code sampling temperature (0: greedy)
    max_gen_tokens: int = 512
    code_timeout_s: float = 10.0
    math_timeout_s: float = 10.0
    progress: bool = True


def _units(task: Task, docs: Sequence[dict[str, Any]]) -> tuple[int, str]:
    if task.kind == "mc":
        return sum(len(d["choices"]) for d in docs), "choice"
    if task.kind == "ppl":
        return 0, "window"
    return len(docs), "example"


def run_task(lm: Any, task: Task, config: EvalConfig, grader: Any = None) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    docs = task.docs[:config.limit] if config.limit else task.docs
    total, unit = _units(task, docs)
    with tqdm(total=total or None, desc=task.name, unit=unit, disable=not config.progress,
              dynamic_ncols=True) as bar:
        if task.kind == "mc":
            return runners.run_mc(lm, docs, num_fewshot=config.num_fewshot, seed=config.seed,
                                  all_docs=task.docs, progress=bar.update)
        if task.kind == "humaneval":
            from phi4_jax.eval.code_task import run_humaneval

            return run_humaneval(lm, docs, n=config.n_samples, ks=config.pass_ks,
                                 temperature=config.temperature, max_tokens=config.max_gen_tokens,
                                 seed=config.seed, timeout_s=config.code_timeout_s,
                                 progress=bar.update)
        if task.kind == "champ":
            return runners.run_champ(lm, docs, max_tokens=config.max_gen_tokens,
                                     seed=config.seed, timeout_s=config.math_timeout_s,
                                     progress=bar.update)
        if task.kind == "simpleqa":
            if grader is None:
                from phi4_jax.eval.graders import RuleGrader

                grader = RuleGrader()
            return runners.run_simpleqa(lm, docs, grader, max_tokens=min(config.max_gen_tokens,
                                                                         64),
                                        seed=config.seed, progress=bar.update)
        if task.kind == "ppl":
            return runners.run_ppl(lm, docs, progress=bar.update)
    raise ValueError(f"unknown task kind {task.kind!r}")


def load_decontamination_report(path: str) -> dict[str, Any]:
    """A decontamination report (OUTPUT.report.json of `phi4_jax.curate.decontaminate`), with
    its absolute path under "path"; a missing or malformed file is a UsageError."""
    from phi4_jax.cli import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as e:
        raise UsageError(f"--decontamination_report={path}: {e.strerror}") from e
    except ValueError as e:
        raise UsageError(f"--decontamination_report={path}: not JSON ({e})") from e
    if not isinstance(report, dict) or not isinstance(report.get("benchmarks"), dict):
        raise UsageError(f"--decontamination_report={path}: not a decontamination report (no "
                         "\"benchmarks\"; expected OUTPUT.report.json of python -m "
                         "phi4_jax.curate.decontaminate)")
    return {**report, "path": os.path.abspath(path)}


def decontamination_status(report: dict[str, Any], task: Task,
                           docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What `report` says of `task`'s benchmark, found by name: the task's name, its file's
    name up to the first dot (the decontaminator's name for a JSONL benchmark), or its kind
    (humaneval, champ: its names for the packaged sets).

    status: "decontaminated" (the training data was checked against this benchmark; matched
    records were removed), or "not in report" (it was not: scores may be inflated by
    contamination). With it: the report's counts for the benchmark (items, too_short,
    records checked, records_matched, matches), the ids of the benchmark items and of the
    training records that matched (as listed: the report lists the first 1000 matches), and
    how many of the evaluated examples are among the matched items (by id: a benchmark file
    with an "id" field gives both sides the same ids).
    """
    benches = report["benchmarks"]
    names = [task.name, os.path.basename(task.source or "").split(".")[0], task.kind]
    name = next((n for n in names if n in benches), None)
    out: dict[str, Any] = {"report": report["path"]}
    if name is None:
        return {**out, "status": "not in report", "looked_for": sorted(set(names))}
    bench = benches[name]
    listed = bench.get("listed", [])
    items = sorted({str(m["item_id"]) for m in listed})
    ids = {str(d.get("id")) for d in docs}
    return {**out, "status": "decontaminated", "benchmark": name,
            "passes": report.get("passes"), "items": bench.get("items"),
            "too_short": bench.get("too_short"), "records_checked": report.get("records"),
            "records_matched": bench.get("records_matched", 0),
            "matches": bench.get("matches", 0), "listed_all": len(listed) >= bench.get(
                "matches", 0), "items_matched": items,
            "records": sorted({str(m["record_id"]) for m in listed}),
            "examples": len(docs), "examples_matched": len(ids.intersection(items))}


def evaluate(lm: Any, tasks: Sequence[Task], config: EvalConfig, *, output: str | None = None,
             grader: Any = None, tensorboard: bool = False,
             decontamination: dict[str, Any] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {
        "model": {"name": lm.name, "fingerprint": lm.fingerprint},
        "config": dataclasses.asdict(config) | {"progress": None},
        "tasks": {}}
    for task in tasks:
        start = time.perf_counter()
        samples = run_task(lm, task, config, grader)
        entry = {"kind": task.kind, "source": task.source, "fingerprint": task.fingerprint,
                 "model_fingerprint": lm.fingerprint, **runners.summarize(task.kind, samples),
                 "seconds": round(time.perf_counter() - start, 3)}
        if task.kind == "simpleqa":
            entry["grader"] = getattr(grader, "name", "rule")
        if decontamination is not None:
            docs = task.docs[:config.limit] if config.limit else task.docs
            entry["decontamination"] = decontamination_status(decontamination, task, docs)
        results["tasks"][task.name] = entry
        if output:
            text = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
            os.makedirs(os.path.join(output, "samples"), exist_ok=True)
            atomic_write_text(os.path.join(output, "samples", f"{task.name}.jsonl"), text)
    if output:
        atomic_write_text(os.path.join(output, "results.json"),
                          json.dumps(results, indent=2, sort_keys=True) + "\n")
        if tensorboard:
            write_tensorboard(os.path.join(output, "tensorboard"), results)
    return results


def write_tensorboard(logdir: str, results: dict[str, Any], step: int = 0) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(logdir)
    try:
        for name, task in results["tasks"].items():
            for metric, figure in task["metrics"].items():
                writer.add_scalar(f"{name}/{metric}", figure["value"], step)
    finally:
        writer.close()
