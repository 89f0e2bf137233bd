"""The offline data end to end (`python -m phi4_jax.curate.e2e`): a pydoc HTML page ->
extraction -> seed curation and rewriting by SmolLM2-135M served by phi4_jax.serve ->
validation in the sandbox -> decontamination -> dedup -> a token store -> a tiny pretraining
run with it as a mixture source. Then the same command again: the workflows ask the server
nothing, the finished steps are skipped and training resumes at its last step."""

from __future__ import annotations

import json
import os

import pytest


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.hf
def test_pages_to_synthetic_source_to_training_and_rerun(tmp_path, capfd, monkeypatch):
    pytest.importorskip("gguf")
    # one CPU device, as the command runs for a user: a few hundred synthetic tokens give one
    # held-out row, which does not split over the suite's 8 simulated devices
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    from phi4_jax.curate.e2e import SOURCE, main

    argv = ["--workdir", str(tmp_path), "--modules", "colorsys,bisect", "--steps", "2",
            "--max_tokens", "64"]
    assert main(argv) == 0
    first = capfd.readouterr().out
    rewritten = _lines(tmp_path / "rewritten" / "rewritten.jsonl")
    seeds = _lines(tmp_path / "seeds" / "seeds.jsonl")
    assert seeds and {r["dataset_type"] for r in rewritten} == {"exercise", "discussion",
                                                                 "reasoning"}
    assert len(rewritten) == 3 * len(seeds)
    validated = _lines(tmp_path / "validated" / "validated.jsonl")
    rejected = [json.loads(x) for p in (tmp_path / "validated" / "stages" / "validated").glob(
        "*.rejects.jsonl") for x in p.read_text().splitlines()]
    assert len(validated) + len(rejected) == len(rewritten)  # every record kept or counted
    assert all(r["validation"]["verdict"] in ("passed", "no_code") for r in validated)
    deduped = _lines(tmp_path / "deduped.jsonl")
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["num_documents"] == len(deduped) > 0
    metrics = {}
    for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines():
        metrics.update(json.loads(line))
    assert metrics["step"] == 2 and f"eval/loss/{SOURCE}" in metrics
    report = (tmp_path / "report.txt").read_text()
    assert f"deduped     {len(deduped):>6}" in report and "eval/loss/e2e_synthetic" in report
    assert "requests this run" in first

    assert main(argv) == 0  # resumed: nothing asked again, nothing redone
    second = capfd.readouterr().out
    for workflow in ("seed_curation", "rewrite"):
        assert f"workflow {workflow}: " in second
        line = next(x for x in second.splitlines() if x.startswith(f"workflow {workflow}: "))
        assert ", 0 requests this run" in line, line
    for step in ("clean", "deduped", "store"):
        assert f"[e2e] {step}: done before" in second
    assert (tmp_path / "report.txt").read_text().splitlines()[-1] == report.splitlines()[-1]


def test_a_step_reruns_when_its_input_changes(tmp_path, capfd):
    """A finished step is skipped only while its command and its input's contents are the
    same; rerun on other input, its output directory is removed first."""
    import sys

    from phi4_jax.curate.e2e import Job

    source, out = tmp_path / "in.jsonl", tmp_path / "out"
    source.write_text('{"id": 1}\n')
    argv = [sys.executable, "-c", f"import os; os.makedirs({str(out)!r}, exist_ok=True); "
            f"open(os.path.join({str(out)!r}, 'n'), 'a').write('x')"]
    job = Job(str(tmp_path), {})
    job.run("copy", argv, source=str(source), output_dir=str(out))
    job.run("copy", argv, source=str(source), output_dir=str(out))
    assert (out / "n").read_text() == "x" and "copy: done before" in capfd.readouterr().out
    (out / "stale").write_text("from the first input")
    source.write_text('{"id": 2}\n')
    job.run("copy", argv, source=str(source), output_dir=str(out))
    assert sorted(os.listdir(out)) == ["n"] and (out / "n").read_text() == "x"
    job.run("copy", [*argv[:-1], argv[-1] + " "], source=str(source), output_dir=str(out))
    assert "done before" not in capfd.readouterr().out  # another command: run again
