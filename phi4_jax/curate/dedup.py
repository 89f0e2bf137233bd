"""Near-duplicate removal: MinHash LSH clusters, the smallest id of each kept.

    python -m phi4_jax.curate.dedup --input data.jsonl --output deduped.jsonl
    python -m phi4_jax.curate.dedup --input 'data/*.jsonl' --output out/ --runner=FnApiRunner

In process (the default): writes OUTPUT (kept records, input order), OUTPUT.clusters.jsonl
({"representative", "members"} per cluster of two or more) and OUTPUT.report.json. With
`--runner` (any Beam runner; other unknown flags go to Beam's PipelineOptions) OUTPUT is a
directory: kept-*.jsonl and clusters-*.jsonl ({"id", "representative"}), the same clusters
(phi4_jax.curate.dedup_beam). Defaults (phi4_jax.curate.minhash): 5-word shingles, 14 bands x
8 rows; every record needs an id (`--id_field`), unique within the input.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence

from phi4_jax import cli
from phi4_jax.curate.minhash import DEFAULT, Clusters, MinHashConfig, near_duplicates
from phi4_jax.io import BadInputReport, atomic_write_json, read_objects

PROG = "python -m phi4_jax.curate.dedup"


def _records(paths: Sequence[str], text_field: str, id_field: str, bad: BadInputReport):
    for path in paths:
        for line, obj, error in read_objects(path):
            where = f"{path}:{line}"
            if error is None and not isinstance(obj.get(text_field), str):
                error = f"no string field {text_field!r}"
            if error is None and id_field not in obj:
                error = f"no field {id_field!r}"
            if error is not None:
                bad.bad(path, getattr(error, "reason", "bad_record"), where, error)
                continue
            bad.ok(path)
            yield str(obj[id_field]), obj


def dedup_files(paths: Sequence[str], output: str, config: MinHashConfig = DEFAULT, *,
                text_field: str = "text", id_field: str = "id") -> tuple[Clusters, dict]:
    """The in-process path: two reads of the input (signatures, then the kept records)."""
    bad = BadInputReport()
    clusters = near_duplicates(((i, o[text_field]) for i, o in
                                _records(paths, text_field, id_field, bad)), config)
    removed, kept = clusters.removed(), 0
    with open(output + ".tmp", "w", encoding="utf-8") as out:
        for doc_id, obj in _records(paths, text_field, id_field, BadInputReport()):
            if doc_id not in removed:
                kept += 1
                out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(output + ".tmp", output)
    groups = clusters.groups()
    with open(output.removesuffix(".jsonl") + ".clusters.jsonl", "w", encoding="utf-8") as f:
        for rep, members in groups.items():
            f.write(json.dumps({"representative": rep, "members": members}) + "\n")
    report = {"records": bad.records_ok, "kept": kept, "removed": len(removed),
              "clusters": len(groups), "config": {"ngram": config.ngram, "bands": config.bands,
                                                  "rows": config.rows, "seed": config.seed},
              "bad_input": bad.to_json()}
    atomic_write_json(output.removesuffix(".jsonl") + ".report.json", report)
    return clusters, report


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(PROG, __doc__,
                        example=f"{PROG} --input data.jsonl --output deduped.jsonl")
    parser.add_argument("--input", action="append", required=True, help="JSONL file or glob")
    parser.add_argument("--output", required=True, help="JSONL file (a directory with --runner)")
    parser.add_argument("--text_field", default="text")
    parser.add_argument("--id_field", default="id")
    parser.add_argument("--ngram", type=int, default=MinHashConfig.ngram, help="shingle words")
    parser.add_argument("--bands", type=int, default=MinHashConfig.bands)
    parser.add_argument("--rows", type=int, default=MinHashConfig.rows)
    parser.add_argument("--seed", type=int, default=MinHashConfig.seed)
    parser.add_argument("--runner", default=None, help="a Beam runner (default: in process)")
    args, beam_args = parser.parse_known_args(argv)
    paths = [p for pattern in args.input for p in sorted(glob.glob(pattern))]
    if not paths:
        raise cli.UsageError(f"--input {', '.join(args.input)}: names no file")
    if min(args.ngram, args.bands, args.rows) < 1:
        raise cli.UsageError("--ngram, --bands and --rows must be >= 1")
    config = MinHashConfig(args.ngram, args.bands, args.rows, args.seed)
    if args.runner:
        from phi4_jax.curate.dedup_beam import run_beam

        run_beam(paths, args.output, config, text_field=args.text_field,
                 id_field=args.id_field, beam_args=[f"--runner={args.runner}", *beam_args])
        print(f"dedup (Beam {args.runner}): wrote {args.output}/kept-*.jsonl, clusters-*.jsonl")
        return 0
    if beam_args:
        raise cli.UsageError(f"unknown flags {beam_args} (Beam flags need --runner)")
    _, report = dedup_files(paths, args.output, config, text_field=args.text_field,
                            id_field=args.id_field)
    print(f"dedup: {report['records']} records, {report['kept']} kept, {report['removed']} "
          f"removed in {report['clusters']} clusters -> {args.output}")
    if report["bad_input"]["bad_total"]:
        print(BadInputReport.from_json(report["bad_input"]).format_text(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from phi4_jax.curate import dedup

    cli.run(dedup.main, prog=PROG)
