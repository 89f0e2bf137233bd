"""Run records: what made a run, appended to WORKDIR/runs.jsonl at every launch.

    record = runs.start(run_config, workdir, mesh=prog.mesh, data=iterator, resume={...})
    ...                                        # train
    runs.finish(record, step=step, metrics=last, preempted=preempted)   # in a `finally`

    runs.write_job_record(output_dir, job=PROG, argv=argv, config=vars(args), inputs=[...])

A record (schema SCHEMA; docs/launch.md shows a real one) holds: the command (argv, the
`python -m` line, the `--exp` spec and its overrides, the record it was reproduced from), the
resolved config, its seeds, the code (commit, dirty, diff hash, the diff when small), the
packages (Python, the key versions, every installed distribution), the topology (device kind,
counts, slices, mesh), the environment variables that change compilation, the inputs (every
token store's content fingerprint, every input file's sha256 or gs:// generation), the host,
start and end times, the status and the result. `start` appends it with status "running";
`finish` rewrites that line with the end (status completed / preempted / failed /
interrupted), so a killed launch still leaves its start. A job record (data preparation,
post-training) is written when the job starts and stamped with its end at interpreter exit.
Only process 0 writes. Collecting never fails the run: a collector that cannot tell leaves an
"error" entry.

The launcher says how it was called with `set_command` (used by the next `start`); without it
the record takes sys.argv.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import logging
import os
import shlex
import socket
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi4_jax.runs import collect, history

SCHEMA = "phi4_jax.run_record/1"
log = logging.getLogger(__name__)
_COMMAND: dict[str, Any] | None = None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def command_of(argv: Sequence[str], module: str | None) -> dict[str, Any]:
    """The command part of a record: argv[0] is the program; `module` its `python -m` name."""
    args = list(argv[1:])
    exp = next((a.split("=", 1)[1] for a in args if a.startswith("--exp=")), None)
    if exp is None and "--exp" in args[:-1]:
        exp = args[args.index("--exp") + 1]
    program = f"python -m {module}" if module else (argv[0] if argv else sys.executable)
    return {"argv": list(argv), "module": module, "line": shlex.join([*program.split(), *args]),
            "exp": exp, "overrides": [a for a in args if a.startswith("--exp.")],
            "cwd": os.getcwd(), "reproduced_from": None}


def set_command(argv: Sequence[str], *, module: str, reproduced_from: Mapping | None = None
                ) -> None:
    """Tells the next `start` the launch's command line (argv[0] is the program)."""
    global _COMMAND
    _COMMAND = command_of(argv, module) | {"reproduced_from": dict(reproduced_from or {})
                                           or None}


def _take_command() -> dict[str, Any]:
    global _COMMAND
    command, _COMMAND = _COMMAND, None
    if command is not None:
        return command
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name.removesuffix(".__main__") if spec is not None else None
    return command_of(sys.argv, module)


def _safe(what: str, fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - provenance never fails the run
        log.warning("run record: could not collect %s: %s", what, e)
        return {"error": f"{type(e).__name__}: {e}"}


def new_record(kind: str, job: str, config: Mapping[str, Any], command: Mapping[str, Any],
               inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A record of this process's launch, before it runs (status "running")."""
    config = dict(config)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return {"schema": SCHEMA, "id": f"{stamp}-{uuid.uuid4().hex[:8]}", "launch": None,
            "kind": kind, "job": job, "status": "running", "started": now(), "ended": None,
            "command": dict(command), "config": config, "seeds": collect.seeds(config),
            "code": _safe("the code version", collect.code),
            "packages": _safe("package versions", collect.packages),
            "topology": None, "environment": collect.environment(), "data": dict(inputs),
            "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
            "resume": None, "result": None, "error": None}


@dataclasses.dataclass
class Record:
    """A launch's record and where it lives; `writer` False on processes other than 0."""

    workdir: str
    data: dict[str, Any]
    writer: bool = True
    tensorboard: Any = None  # the run-record TensorBoard writer (training, log.tensorboard)
    done: bool = False


def start(run_config: Any, workdir: str, *, mesh: Any = None, data: Any = None,
          resume: Mapping[str, Any] | None = None) -> Record:
    """Appends this training launch's record to WORKDIR/runs.jsonl (process 0) and, with
    log.tensorboard, writes it to TensorBoard as text plus the config as hparams.

    run_config: a `phi4_jax.train.config.RunConfig` (its `.experiment` is recorded) or the
    experiment as a mapping. mesh: the run's mesh (topology). data: the data iterator (its
    token stores' fingerprints). resume: how the launch started (e.g. {"start": "checkpoint",
    "step": 40})."""
    import jax

    if jax.process_index() != 0:
        return Record(workdir, {}, writer=False)
    experiment = getattr(run_config, "experiment", run_config)
    inputs = {"stores": _safe("token stores", collect.stores, data),
              "files": _safe("input files", collect.files, collect.config_inputs(experiment))}
    record = new_record("train", "train", experiment, _take_command(), inputs)
    record["topology"] = _safe("the topology", collect.topology, mesh)
    record["resume"] = dict(resume) if resume else None
    handle = Record(workdir, record)
    try:
        history.append(workdir, record)
    except Exception as e:  # noqa: BLE001 - a full or read-only disk fails the run elsewhere
        log.warning("run record: could not append to %s: %s", history.path_of(workdir), e)
    _warn_about_differences(record)
    log_section = getattr(run_config, "log", None)
    if getattr(log_section, "tensorboard", False):
        from phi4_jax.runs import tensorboard

        handle.tensorboard = _safe("TensorBoard", tensorboard.write_start, workdir, record)
        if isinstance(handle.tensorboard, dict):  # an error entry
            handle.tensorboard = None
    return handle


def _warn_about_differences(record: Mapping[str, Any]) -> None:
    """A reproduced run: log how its topology differs from the source record's (the launcher
    already compared code, packages and data, before the run started)."""
    source = (record["command"].get("reproduced_from") or {}).get("spec")
    if not source:
        return
    from phi4_jax.runs import diff

    try:
        original = history.select(source)
    except Exception as e:  # noqa: BLE001 - the launcher already read it; a warning at most
        log.warning("run record: cannot re-read %s: %s", source, e)
        return
    for line in diff.differences(original, record, sections=("topology",)):
        log.warning("reproducing %s: %s", source, line)


def finish(handle: Record, *, step: int | None = None, metrics: Mapping[str, float] | None = None,
           preempted: bool = False, status: str | None = None) -> None:
    """Stamps the launch's end: status (from the exception in flight when called in a
    `finally`: failed / interrupted; else preempted or completed), result and end time.
    Runs once per record; never raises."""
    if handle.done or not handle.writer:
        return
    handle.done = True
    error = sys.exc_info()[1]
    if status is None:
        status = ("interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
                  if error is not None else "preempted" if preempted else "completed")
    record = handle.data
    record.update(status=status, ended=now(),
                  error=f"{type(error).__name__}: {error}" if error is not None else None)
    if step is not None or metrics:
        record["result"] = {"step": step, "metrics": {k: float(v) for k, v in
                                                      (metrics or {}).items()}}
    try:
        history.update(handle.workdir, record)
    except Exception as e:  # noqa: BLE001 - the run's own outcome matters more
        log.warning("run record: could not write the end of launch %s: %s", record["id"], e)
    if handle.tensorboard is not None:
        from phi4_jax.runs import tensorboard

        _safe("TensorBoard", tensorboard.write_end, handle.tensorboard, record)


def write_job_record(output_dir: str, *, job: str, argv: Sequence[str] | None,
                     config: Mapping[str, Any], inputs: Iterable[str | None] = ()) -> Record:
    """Appends a job's record to OUTPUT_DIR/runs.jsonl (data preparation, post-training data).

    job: its `python -m` command ('python -m phi4_jax.data.prepare'); argv: its arguments
    (None: sys.argv[1:]); config: its resolved settings (JSON values; others become strings);
    inputs: the paths it reads (files, directories, globs, gs:// URLs; token store directories
    are recorded with their fingerprint). The end time is stamped at interpreter exit (or by
    `finish`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    module = job.removeprefix("python -m ").strip()
    plain = {k: v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else str(v)
             for k, v in dict(config).items()}
    record = new_record("job", job, plain, command_of([job, *args], module),
                        {"stores": {}, "files": _safe("input files", collect.files, inputs)})
    record["data"]["stores"] = {p: e for p, e in record["data"]["files"].items()
                                if isinstance(e, dict) and e.get("kind") == "token_store"}
    handle = Record(output_dir, record)
    try:
        history.append(output_dir, record)
    except OSError as e:
        log.warning("run record: could not write %s: %s", history.path_of(output_dir), e)
        handle.done = True
        return handle
    atexit.register(finish, handle, status="ended")
    return handle
