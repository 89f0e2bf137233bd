"""Decontamination: drop records that share a word n-gram with a benchmark item.

    python -m phi4_jax.curate.decontaminate --input data.jsonl --output clean.jsonl \\
        --benchmark humaneval --benchmark champ

Writes OUTPUT (the clean records, input order), OUTPUT.rejects.jsonl (each contaminated record
with `contamination`: its matches) and OUTPUT.report.json (per benchmark: items, indexed items
per n, items too short to index, records matched, and every match: record id, benchmark item
id, n, the n-gram, its word offset), and prints the report. Normalization: phi4_jax.curate.text
(case, whitespace and punctuation; numbers kept). Passes: phi4_jax.curate.ngram_index
(default 13-grams of every item, 7-grams of the items shorter than 13 words).

As a stage of the workflow engine (phi4_jax.synth):

    Stage("decontaminated", decontaminate_stage,
          params={"benchmarks": ["humaneval", "champ"], "text_field": "text"})

rejects a contaminated record as `contaminated` with its matches in the detail.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi4_jax import cli
from phi4_jax.curate.benchmarks import BenchItem, BenchmarkError, load_benchmarks
from phi4_jax.curate.ngram_index import DEFAULT_PASSES, Match, NGramIndex
from phi4_jax.io import BadInputReport, atomic_write_json, read_objects

PROG = "python -m phi4_jax.curate.decontaminate"
MAX_LISTED = 1000  # matches listed per benchmark in the report (all are counted)


def record_text(record: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The record's text fields joined by blank lines (non-string fields as JSON)."""
    parts = []
    for f in fields:
        v = record.get(f)
        if v is not None:
            parts.append(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    return "\n\n".join(parts)


class Report:
    """What matched where, per benchmark."""

    def __init__(self, index: NGramIndex):
        self.index = index
        self.records = self.clean = 0
        self.matched = collections.Counter()  # benchmark -> records
        self.total = collections.Counter()  # benchmark -> matches
        self.listed: dict[str, list[dict]] = collections.defaultdict(list)

    def add(self, record_id: str, matches: Iterable[Match]) -> None:
        self.records += 1
        matches = list(matches)
        self.clean += not matches
        for b in sorted({m.benchmark for m in matches}):
            self.matched[b] += 1
        for m in matches:
            self.total[m.benchmark] += 1
            if len(self.listed[m.benchmark]) < MAX_LISTED:
                self.listed[m.benchmark].append({"record_id": record_id, **m.to_json()})

    def to_json(self) -> dict:
        benches = {}
        for b, stats in sorted(self.index.stats.items()):
            benches[b] = {**dict(sorted(stats.items())), "records_matched": self.matched[b],
                          "matches": self.total[b], "listed": self.listed.get(b, [])}
        return {"passes": [list(p) for p in self.index.passes], "records": self.records,
                "clean": self.clean, "contaminated": self.records - self.clean,
                "benchmarks": benches}

    def format_text(self) -> str:
        lines = [f"decontamination: {self.records} records, {self.records - self.clean} "
                 f"contaminated, passes {self.index.passes}",
                 f"{'benchmark':<16}{'items':>7}{'too_short':>10}{'records':>9}{'matches':>9}"]
        for b, stats in sorted(self.index.stats.items()):
            lines.append(f"{b:<16}{stats['items']:>7}{stats['too_short']:>10}"
                         f"{self.matched[b]:>9}{self.total[b]:>9}")
            for m in self.listed.get(b, [])[:3]:
                lines.append(f"    {m['record_id']} ~ {m['item_id']} ({m['n']}-gram at word "
                             f"{m['position']}): {m['ngram'][:70]}")
        return "\n".join(lines)


_INDEXES: dict[str, NGramIndex] = {}


def index_for(params: Mapping[str, Any]) -> NGramIndex:
    """The index of a stage's params, built once per process."""
    key = json.dumps({k: params.get(k) for k in ("benchmarks", "benchmark_field",
                                                 "benchmark_id_field", "passes")},
                     sort_keys=True)
    if key not in _INDEXES:
        items = load_benchmarks(params["benchmarks"], field=params.get("benchmark_field", "text"),
                                id_field=params.get("benchmark_id_field", "id"))
        _INDEXES[key] = NGramIndex(items, params.get("passes") or DEFAULT_PASSES)
    return _INDEXES[key]


async def decontaminate_stage(record: dict, ctx) -> dict:
    """A workflow stage: params benchmarks (specs), text_field (str or list; default "text"),
    passes, benchmark_field, benchmark_id_field. Rejects `contaminated`."""
    from phi4_jax.synth import Reject

    fields = ctx.params.get("text_field", "text")
    fields = [fields] if isinstance(fields, str) else list(fields)
    matches = index_for(ctx.params).scan(record_text(record, fields))
    if matches:
        raise Reject("contaminated", json.dumps([m.to_json() for m in matches[:20]]))
    return record


def decontaminate_file(index: NGramIndex, path: str, output: str, *,
                       text_fields: Sequence[str], id_field: str = "id") -> tuple[Report,
                                                                                 BadInputReport]:
    """Reads JSONL `path`, writes the clean records to `output` and the contaminated ones to
    OUTPUT.rejects.jsonl (both via temporary files renamed at the end)."""
    report, bad = Report(index), BadInputReport()
    rejects_path = rejects_file(output)
    with open(output + ".tmp", "w", encoding="utf-8") as out, \
            open(rejects_path + ".tmp", "w", encoding="utf-8") as rej:
        for line, obj, error in read_objects(path):
            if error is not None:
                bad.bad(path, error.reason, f"{path}:{line}", error)
                continue
            bad.ok(path)
            rid = str(obj.get(id_field, f"{os.path.basename(path)}:{line}"))
            matches = index.scan(record_text(obj, text_fields))
            report.add(rid, matches)
            if matches:
                obj = {**obj, "contamination": [m.to_json() for m in matches]}
            (rej if matches else out).write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(output + ".tmp", output)
    os.replace(rejects_path + ".tmp", rejects_path)
    return report, bad


def rejects_file(output: str) -> str:
    return output.removesuffix(".jsonl") + ".rejects.jsonl"


def parse_passes(values: Sequence[str] | None) -> list[tuple[int, str]]:
    if not values:
        return list(DEFAULT_PASSES)
    out = []
    for v in values:
        n, _, scope = v.partition(":")
        if not n.isdigit() or int(n) < 1 or scope not in ("", "all", "short"):
            raise cli.UsageError(f"--ngram {v}: write N or N:all or N:short (e.g. 13 7:short)")
        out.append((int(n), scope or "all"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(PROG, __doc__, example=f"{PROG} --input data.jsonl --output clean.jsonl "
                        "--benchmark humaneval --benchmark champ")
    parser.add_argument("--input", required=True, help="JSONL (.gz/.zst) of records")
    parser.add_argument("--output", required=True, help="JSONL of the clean records")
    parser.add_argument("--benchmark", action="append", required=True,
                        help="humaneval | champ | PATH.jsonl[:FIELD], optionally NAME=SPEC "
                             "(repeatable)")
    parser.add_argument("--benchmark_field", default="text", help="text field of JSONL benchmarks")
    parser.add_argument("--benchmark_id_field", default="id", help="id field of JSONL benchmarks")
    parser.add_argument("--text_field", action="append", default=None,
                        help="record field(s) to check (repeatable; default text)")
    parser.add_argument("--id_field", default="id", help="record id field (for the report)")
    parser.add_argument("--ngram", action="append", default=None,
                        help="a pass N[:all|short] (repeatable; default 13 and 7:short)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        raise cli.UsageError(f"--input {args.input}: no such file")
    passes = parse_passes(args.ngram)
    with cli.user_errors_from(BenchmarkError):
        items: list[BenchItem] = load_benchmarks(args.benchmark, field=args.benchmark_field,
                                                 id_field=args.benchmark_id_field)
    index = NGramIndex(items, passes)
    report, bad = decontaminate_file(index, args.input, args.output,
                                     text_fields=args.text_field or ["text"],
                                     id_field=args.id_field)
    atomic_write_json(args.output.removesuffix(".jsonl") + ".report.json",
                      {**report.to_json(), "bad_input": bad.to_json()})
    print(report.format_text())
    if bad.bad_total:
        print(bad.format_text(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main, prog=PROG)
