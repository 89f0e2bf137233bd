"""lm-eval-harness's HF backend and this harness score the same local MC task alike.

SmolLM2-135M as a Hugging Face directory (float32, written from the GGUF), a 6-question
3-choice task as JSONL (`dataset_path: json` through a TaskManager include path, the prompt
"Question: {question}\\nAnswer:"). lm-eval's `hf` model (transformers, torch, float32, CPU)
and `python -m phi4_jax.eval` on the same directory must give the same per-choice
log-likelihoods to TOLERANCE nats (two float32 implementations: torch vs XLA kernels differ in
summation order; measured differences are printed) and the same acc and acc_norm.

    python -m pytest -q -m slow tests/eval/test_lm_eval_parity.py      # about a minute
"""

from __future__ import annotations

import json

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("torch")
pytestmark = pytest.mark.slow

QUESTIONS = [
    ("What color is the sky on a clear day?", ["blue", "green", "red"], 0),
    ("How many legs does a spider have?", ["six", "eight", "ten"], 1),
    ("What is the capital of France?", ["Berlin", "Madrid", "Paris"], 2),
    ("Which animal says moo?", ["cow", "cat", "dog"], 0),
    ("What is frozen water called?", ["ice", "steam", "absolutely nothing at all"], 0),
    ("Which is a fruit?", ["a carrot", "an apple", "bread"], 1),
]
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("mc_task")
    data = root / "parity_mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in QUESTIONS))
    (root / "parity_mc.yaml").write_text(
        "task: parity_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    return str(root), str(data)


def test_same_logliks_and_accuracies_as_lm_eval_hf(smollm2_hf, task, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    from phi4_jax.eval.__main__ import main

    include, data = task
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": smollm2_hf, "dtype": "float32", "device": "cpu"},
        tasks=["parity_mc"], task_manager=TaskManager(include_path=include), log_samples=True,
        batch_size=4, cache_requests=False)
    samples = sorted(theirs["samples"]["parity_mc"], key=lambda s: s["doc_id"])
    their_ll = np.array([[float(r[0][0]) for r in s["resps"]] for s in samples])

    out = tmp_path / "ours"
    assert main([f"--model={smollm2_hf}", f"--tasks=mc:{data}", f"--output={out}",
                 "--batch_size=8", "--no_progress"]) == 0
    ours = [json.loads(line) for line in (out / "samples" / "parity_mc.jsonl").open()]
    our_ll = np.array([s["loglik"] for s in ours])
    diff = np.abs(our_ll - their_ll)
    print(f"max |ours - lm-eval hf| = {diff.max():.2e} nats over {diff.size} log-likelihoods")
    np.testing.assert_allclose(our_ll, their_ll, atol=TOLERANCE, rtol=0)
    results = json.loads((out / "results.json").read_text())["tasks"]["parity_mc"]["metrics"]
    for metric in ("acc", "acc_norm"):
        assert results[metric]["value"] == pytest.approx(
            theirs["results"]["parity_mc"][f"{metric},none"])
        assert results[metric]["stderr"] == pytest.approx(
            theirs["results"]["parity_mc"][f"{metric}_stderr,none"])
    # the prompts lm-eval built are ours, character for character
    assert [s["arguments"][0][0] for s in samples] == [s["prompt"] for s in ours]
