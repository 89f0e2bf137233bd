"""The report of counted bad input: per file and reason, with the first location of each.

    report = BadInputReport()
    report.ok(path)                                   # a good record
    report.bad(path, "malformed_json", f"{path}:{n}", "Expecting value at column 3")
    print(report.format_text())                       # one table for the user
    json.dump(report.to_json(), f)                    # mergeable across shards / workers

A reader never raises for a bad record: it counts it here and goes on. `reasons`, when given,
is the closed vocabulary of a reader (reason -> one line of meaning) and an unknown reason is a
programming error; without it any short reason string is accepted.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass
class FileReport:
    records_ok: int = 0
    bad: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first: dict[str, str] = dataclasses.field(default_factory=dict)  # reason -> where: detail


class BadInputReport:
    """Counts per file and reason; JSON-serializable and mergeable across shards."""

    def __init__(self, reasons: Mapping[str, str] | None = None):
        self.reasons = dict(reasons) if reasons is not None else None
        self.files: dict[str, FileReport] = {}

    def file(self, path: str) -> FileReport:
        return self.files.setdefault(str(path), FileReport())

    def ok(self, path: str, n: int = 1) -> None:
        self.file(path).records_ok += n

    def bad(self, path: str, reason: str, where: str, detail: str = "") -> None:
        if self.reasons is not None and reason not in self.reasons:
            raise ValueError(f"unknown bad-input reason {reason!r}; known: {sorted(self.reasons)}")
        entry = self.file(path)
        entry.bad[reason] += 1
        if reason not in entry.first:  # bounded: a detail may quote a hostile record
            entry.first[reason] = f"{where}: {str(detail)[:300]}"[:300] if detail else where

    def totals(self) -> collections.Counter:
        total = collections.Counter()
        for entry in self.files.values():
            total.update(entry.bad)
        return total

    @property
    def records_ok(self) -> int:
        return sum(f.records_ok for f in self.files.values())

    @property
    def bad_total(self) -> int:
        return sum(self.totals().values())

    def merge(self, other: BadInputReport) -> BadInputReport:
        for path, entry in other.files.items():
            mine = self.file(path)
            mine.records_ok += entry.records_ok
            mine.bad.update(entry.bad)
            for reason, where in entry.first.items():
                mine.first.setdefault(reason, where)
        return self

    def to_json(self) -> dict[str, Any]:
        totals = self.totals()
        return {"records_ok": self.records_ok, "bad_total": sum(totals.values()),
                "bad_by_reason": dict(sorted(totals.items())),
                "files": {p: {"records_ok": f.records_ok, "bad": dict(sorted(f.bad.items())),
                              "first": dict(sorted(f.first.items()))}
                          for p, f in sorted(self.files.items())}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any],
                  reasons: Mapping[str, str] | None = None) -> BadInputReport:
        report = cls(reasons)
        for path, f in raw["files"].items():
            report.files[path] = FileReport(f["records_ok"], collections.Counter(f["bad"]),
                                            dict(f["first"]))
        return report

    def summary(self) -> str:
        """One line: kept, rejected and the reasons by count."""
        totals = self.totals()
        reasons = ", ".join(f"{r}: {c}" for r, c in totals.most_common())
        return (f"{self.records_ok} records kept, {sum(totals.values())} rejected"
                + (f" ({reasons})" if reasons else ""))

    def format_text(self, max_files: int = 20, title: str = "bad-input report") -> str:
        totals = self.totals()
        lines = [f"{title}: {self.records_ok} records kept, {sum(totals.values())} "
                 f"rejected, {len(self.files)} files"]
        for reason, count in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
            meaning = (self.reasons or {}).get(reason, "")
            lines.append(f"  {reason:<26}{count:>10}  {meaning}".rstrip())
        damaged = [(p, f) for p, f in sorted(self.files.items()) if f.bad]
        for path, f in damaged[:max_files]:
            lines.append(f"  {path}: {f.records_ok} kept; "
                         + ", ".join(f"{r} {c} (first at {f.first[r]})"
                                     for r, c in sorted(f.bad.items())))
        if len(damaged) > max_files:
            lines.append(f"  ... and {len(damaged) - max_files} more files with bad records")
        return "\n".join(lines)
