"""results.json carries each task's decontamination status from a decontaminator's report.

    python -m pytest -q tests/eval/test_decontamination_status.py

A tiny training corpus with two benchmark questions planted (one re-cased and re-spaced) goes
through the real decontaminator (`python -m phi4_jax.curate.decontaminate`); its report, given
to the harness, names what matched for the benchmark the task was loaded from (found by the
file's name), and "not in report" for a task it does not cover. A missing or foreign report is a
one-line user error.
"""

from __future__ import annotations

import json

import pytest

from phi4_jax.eval.evaluate import (
    EvalConfig,
    decontamination_status,
    evaluate,
    load_decontamination_report,
)
from phi4_jax.eval.tasks import load_task

QUESTIONS = [
    ("q-river", "Which river flows through the old capital city before reaching the northern "
     "sea coast?", ["the Elbe", "the Rhine", "the Thames"], 1),
    ("q-train", "How many hours does the night train take between the two mountain towns in "
     "winter?", ["three", "five", "seven"], 2),
    ("q-bread", "What does the baker add to the dough after it has rested for one whole hour?",
     ["salt", "sugar", "nothing"], 0),
]


class CountingLM:
    """Log-likelihood = minus the continuation's length: enough to run the MC runner."""

    name, fingerprint, max_length, prefix_id = "counting", "0" * 64, 2048, None

    def encode(self, text, *, bos=None):
        return list(text.encode())

    def loglikelihood(self, pairs, progress=None):
        return [-float(len(k)) for _, k in pairs]


@pytest.fixture()
def report(tmp_path):
    from phi4_jax.curate.decontaminate import main as decontaminate

    bench = tmp_path / "trivia.jsonl"
    bench.write_text("".join(json.dumps({"id": i, "question": q, "choices": c, "answer": a}) + "\n"
                             for i, q, c, a in QUESTIONS))
    corpus = tmp_path / "train.jsonl"
    records = [
        {"id": "doc-0", "text": "A recipe for rye bread with caraway seeds and a long rise."},
        {"id": "doc-1", "text": "Quiz night! " + QUESTIONS[0][1] + " Answer: the Rhine."},
        {"id": "doc-2", "text": "Timetables change in spring and autumn."},
        {"id": "doc-3", "text": "notes:  " + QUESTIONS[1][1].upper().replace(" ", "   ")},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert decontaminate(["--input", str(corpus), "--output", str(tmp_path / "clean.jsonl"),
                          "--benchmark", f"{bench}:question"]) == 0
    return tmp_path / "clean.report.json", str(bench)


def test_results_carry_the_reports_status(report, tmp_path):
    path, bench = report
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "Is this covered?", "choices": ["yes", "no"],
                                 "answer": 1}) + "\n")
    tasks = [load_task(f"mc:{bench}"), load_task(f"mc:{other}")]
    results = evaluate(CountingLM(), tasks, EvalConfig(progress=False),
                       output=str(tmp_path / "out"),
                       decontamination=load_decontamination_report(str(path)))
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert on_disk == json.loads(json.dumps(results["tasks"]))
    status = on_disk["trivia"]["decontamination"]
    assert status["status"] == "decontaminated" and status["benchmark"] == "trivia"
    assert status["report"] == str(path.resolve())
    assert status["items"] == 3 and status["records_checked"] == 4
    assert status["records_matched"] == 2 and status["records"] == ["doc-1", "doc-3"]
    assert status["items_matched"] == ["q-river", "q-train"] and status["listed_all"]
    assert status["examples"] == 3 and status["examples_matched"] == 2
    assert on_disk["other"]["decontamination"]["status"] == "not in report"
    # --limit: only the evaluated examples count
    limited = decontamination_status(load_decontamination_report(str(path)), tasks[0],
                                     tasks[0].docs[1:])
    assert limited["examples"] == 2 and limited["examples_matched"] == 1


def test_command_line_prints_the_status_and_rejects_bad_reports(report, tmp_path, capsys,
                                                                monkeypatch):
    from phi4_jax import cli
    from phi4_jax.eval import __main__ as entry

    path, bench = report
    monkeypatch.setattr(entry, "make_lm", lambda args: CountingLM())
    assert entry.main([f"--model={tmp_path}", f"--tasks=mc:{bench}", f"--output={tmp_path / 'o'}",
                       f"--decontamination_report={path}", "--no_progress"]) == 0
    assert ("decontamination: decontaminated (2 training records matched 2 items)"
            in capsys.readouterr().out)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"records": 3}')
    for given, message in [(tmp_path / "missing.json", "No such file"),
                           (foreign, "not a decontamination report")]:
        with pytest.raises(SystemExit) as e:
            cli.run(entry.main, [f"--model={tmp_path}", f"--tasks=mc:{bench}",
                                 f"--output={tmp_path / 'o'}", f"--decontamination_report={given}"],
                    prog=entry.PROG)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
