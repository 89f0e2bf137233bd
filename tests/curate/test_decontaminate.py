"""Decontamination: planted HumanEval prompts and CHAMP problems are caught through case and
whitespace changes; clean code and unrelated arithmetic pass; numbers are kept apart."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phi4_jax.curate import decontaminate as dc
from phi4_jax.curate.benchmarks import BenchItem, load_benchmarks
from phi4_jax.curate.ngram_index import NGramIndex
from phi4_jax.curate.text import words


@pytest.fixture(scope="module")
def items():
    return load_benchmarks(["humaneval", "champ"])


@pytest.fixture(scope="module")
def index(items):
    return NGramIndex(items)


def _mangle(text: str) -> str:
    """Upper case, and every space a run of spaces, tabs and newlines."""
    return text.upper().replace(" ", " \t\n  ")


def test_normalization_keeps_numbers_and_drops_case_punctuation_accents():
    assert words("Compute 2+3, then ÉTÉ!\n\tOK_go") == ["compute", "2", "3", "then", "ete",
                                                        "ok", "go"]
    assert words("2+3") != words("7+8")


def test_planted_benchmark_items_are_caught(items, index):
    he = [i for i in items if i.benchmark == "humaneval"]
    ch = [i for i in items if i.benchmark == "champ" and len(words(i.text)) >= 13]
    for item in he[::20] + ch[::25]:
        doc = "Some preamble about homework.\n\n" + _mangle(item.text) + "\n\nThanks!"
        found = index.scan(doc)
        assert (item.benchmark, item.item_id) in {(m.benchmark, m.item_id) for m in found}
        assert all(m.n == 13 for m in found)


def test_clean_code_and_unrelated_arithmetic_pass(index):
    import inspect
    import json as json_module

    clean = [inspect.getsource(json_module.dumps), inspect.getsource(subprocess.run),
             "What is 17 + 25? Add the tens, 10 + 20 = 30, then the ones, 7 + 5 = 12; "
             "so the answer is 42. Next, if Tom has 3 apples and buys 4 more, he has 7.",
             "def add(a, b):\n    return a + b\n"]
    for text in clean:
        assert index.scan(text) == []


def test_numbers_are_kept_apart():
    item = BenchItem("mini", "q1", "Tom has 2 apples and buys 3 more then gives 1 away")
    idx = NGramIndex([item], [(7, "all")])
    assert idx.scan("TOM HAS 2 APPLES, AND BUYS 3 MORE; THEN GIVES 1 AWAY.")
    assert idx.scan("Tom has 7 apples and buys 8 more then gives 4 away") == []
    short = NGramIndex([BenchItem("mini", "q2", "solve 2 + 3 times 4 now")], [(6, "all")])
    assert short.scan("SOLVE 2+3 TIMES 4 NOW") and not short.scan("solve 7+8 times 4 now")


def test_hybrid_passes_short_items_by_7_grams(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"id": "s1", "question": "Which planet has the most moons "
                                 "in the solar system today"}) + "\n")
    items = load_benchmarks([f"{bench}:question"])
    idx = NGramIndex(items)  # (13, all), (7, short): 11 words -> indexed by 7-grams
    assert idx.stats["bench"]["indexed_7"] == 1 and idx.stats["bench"].get("indexed_13", 0) == 0
    found = idx.scan("Quiz: which PLANET has the most moons in the solar system? Saturn.")
    assert [(m.item_id, m.n) for m in found] == [("s1", 7)]
    assert NGramIndex(items, [(13, "all")]).scan("which planet has the most moons in the") == []


def test_stage_function_rejects_contaminated_records(items):
    import asyncio

    from phi4_jax.synth import Reject

    class Ctx:
        params = {"benchmarks": ["humaneval"], "text_field": ["title", "text"]}

    he = items[7]
    asyncio.run(dc.decontaminate_stage({"id": "ok", "text": "nothing to see"}, Ctx()))
    with pytest.raises(Reject) as e:
        asyncio.run(dc.decontaminate_stage({"id": "x", "title": "t", "text": he.text}, Ctx()))
    assert e.value.reason == "contaminated" and he.item_id in e.value.detail


def test_cli_writes_clean_rejects_and_report(tmp_path, items):
    data = tmp_path / "data.jsonl"
    champ = next(i for i in items if i.benchmark == "champ" and len(words(i.text)) > 20)
    rows = [{"id": "clean", "text": "A paragraph about rivers and their deltas."},
            {"id": "leak", "text": "Exercise: " + _mangle(champ.text)},
            {"id": "he", "text": items[0].text}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = tmp_path / "clean.jsonl"
    proc = subprocess.run([sys.executable, "-m", "phi4_jax.curate.decontaminate",
                           f"--input={data}", f"--output={out}", "--benchmark=humaneval",
                           "--benchmark=champ"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["clean"]
    rejects = [json.loads(x) for x in (tmp_path / "clean.rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["leak", "he"]
    report = json.loads((tmp_path / "clean.report.json").read_text())
    listed = report["benchmarks"]["champ"]["listed"]
    assert listed[0]["record_id"] == "leak" and listed[0]["item_id"] == champ.item_id
    assert listed[0]["n"] == 13 and len(listed[0]["ngram"].split()) == 13
    assert report["benchmarks"]["humaneval"]["records_matched"] == 1
    assert report["bad_input"]["bad_total"] == 1 and "leak" in proc.stdout


def test_cli_user_errors_are_one_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": 1, "text": "x"}\n')
    for extra in (["--benchmark=nope.jsonl"], ["--benchmark=humaneval", "--ngram=x"]):
        proc = subprocess.run([sys.executable, "-m", "phi4_jax.curate.decontaminate",
                               f"--input={data}", f"--output={tmp_path / 'o.jsonl'}", *extra],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
