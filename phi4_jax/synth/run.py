"""Run (or resume) a data workflow: LLM stages over JSONL records, cached, sharded, resumable.

    python -m phi4_jax.synth.run workflows/qa.py --output=out/qa
    python -m phi4_jax.synth.run workflows/qa.py:small --output=out/qa --runner=FnApiRunner

CONFIG is a Python file whose get_config(arg=None) returns the workflow (docs/synth.md;
`PATH:ARG` passes ARG). Rerunning the same command after a kill resumes: shards with a current
completion marker are skipped and every reply already received comes from the request cache, so
a finished workflow makes no request at all and the output is byte-identical to an uninterrupted
run. Records that fail (a reply that cannot be parsed, a refused request, bad input) go to the
rejects files and the per-stage reports; records whose requests failed after every retry are
asked again by the next run.

Runners: `--runner=inprocess` (default; asyncio, one progress bar per stage) or any Apache Beam
runner: `--runner=FnApiRunner` (Beam's local batch runner; `DirectRunner` first tries to
download the Prism runner), with Beam's flags after it, e.g. `--direct_num_workers=2
--direct_running_mode=multi_processing`, or Dataflow: `--runner=DataflowRunner --project=P
--region=R --temp_location=gs://B/tmp --setup_file=./setup.py` (--output and the cache must be
on a file system every worker mounts; docs/synth.md).

Writes OUTPUT/manifest.json, OUTPUT/stages/STAGE/{shard-*.jsonl, *.rejects.jsonl, report.txt},
the workflow's exports, and a run record in OUTPUT/runs.jsonl.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from phi4_jax import cli
from phi4_jax.synth.client import RequestError
from phi4_jax.synth.workflow import ConfigError, load_workflow

PROG = "python -m phi4_jax.synth.run"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = cli.parser(PROG, __doc__,
                        example="python -m phi4_jax.synth.run workflows/qa.py --output=out/qa")
    parser.add_argument("config", help="workflow config file (PATH or PATH:ARG)")
    parser.add_argument("--output", required=True, help="output directory (resumed if present)")
    parser.add_argument("--runner", default="inprocess",
                        help="inprocess, or an Apache Beam runner (FnApiRunner, DirectRunner, "
                             "DataflowRunner, ...); unknown flags go to Beam")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args, beam_args = parser.parse_known_args(cli.strip_debug(argv))
    if beam_args and args.runner == "inprocess":
        raise cli.UsageError(f"unrecognized arguments: {' '.join(beam_args)} (Beam flags need "
                             "--runner=FnApiRunner or another Beam runner)")
    with cli.user_errors_from(ConfigError, ValueError):
        workflow = load_workflow(args.config)
        for model in workflow.models.values():  # an unset key variable: one line, exit 2
            from phi4_jax.synth.client import api_key

            api_key(model.api_key_env)
    from phi4_jax import runs  # the run record (imported only by this command)
    from phi4_jax.synth.runner import REJECT_REASONS, run_workflow

    record = runs.write_job_record(args.output, job=PROG, argv=argv, inputs=workflow.inputs,
                                   config={**vars(args), "beam_args": beam_args,
                                           "workflow": workflow.name})
    with cli.user_errors_from(ConfigError, RequestError):
        result = run_workflow(workflow, args.output, runner=args.runner, beam_args=beam_args,
                              progress=not args.quiet)
    metrics = {}
    for stage, counts in result.stats.items():
        metrics.update({f"{stage}/{k}": v for k, v in counts.items()
                        if isinstance(v, int | float)})
    runs.finish(record, metrics=metrics)
    for s in result.manifest["stages"]:
        with open(os.path.join(result.output, "stages", s, "report.txt"), encoding="utf-8") as f:
            print(f.read(), end="")
    transient = sum(v["transient_failures"] for v in result.manifest["stages"].values())
    asked = sum(v.get("requests", 0) for v in result.stats.values())
    print(f"workflow {workflow.name}: {result.manifest['source']['records']} input records, "
          f"{asked} requests this run; manifest {os.path.join(result.output, 'manifest.json')}")
    if transient:
        print(f"{transient} records failed after every retry "
              f"({REJECT_REASONS['request_failed'].split('; ')[1]}): rerun the same command")
    return 0


if __name__ == "__main__":
    # Run the importable module, not __main__, so Beam workers in other processes can unpickle
    # the plan's classes by name.
    from phi4_jax.synth import run

    cli.run(run.main, prog=PROG)
