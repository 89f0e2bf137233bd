"""lm-eval-harness's own `local-completions` model against the server, on a local task.

A 5-question, 3-choice multiple-choice task written as JSONL (`dataset_path: json`, loaded with
`--include_path` semantics through a TaskManager) runs through `lm_eval.simple_evaluate`; lm-eval
tokenizes with the server's remote tokenizer endpoints and sends echo + logprobs requests. Every
log-likelihood it reports must equal scoring the same (context, continuation) tokens in process
with `inference.scoring.score`, to 1e-4 nats (docs/serve.md: both are one float32 forward pass;
padding to different shape buckets moves the last bits), and its accuracy must be the accuracy
of the in-process argmax.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from phi4_jax.inference.scoring import score
from tests.serve.conftest import serve

lm_eval = pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

QUESTIONS = [
    ("What color is the sky on a clear day?", ["blue", "green", "red"], 0),
    ("How many legs does a spider have?", ["six", "eight", "ten"], 1),
    ("What is the capital of France?", ["Berlin", "Madrid", "Paris"], 2),
    ("Which animal says moo?", ["cow", "cat", "dog"], 0),
    ("What is two plus two?", ["three", "five", "four"], 2),
]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_eval_task")
    data = root / "mc.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for q, choices, answer in QUESTIONS:
            f.write(json.dumps({"question": q, "choices": choices, "answer": answer}) + "\n")
    (root / "phi4_serve_mc.yaml").write_text(
        "task: phi4_serve_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
        "doc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{answer}}\"\n"
        "metric_list:\n  - metric: acc\n")
    return str(root)


def _encode_pair(codec, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's `_encode_pair` for causal models (trailing spaces move to the continuation)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = codec.encode(context + continuation), codec.encode(context)
    return ctx, whole[len(ctx):]


def test_lm_eval_loglikelihoods_equal_in_process_scoring(smollm2, task_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    with serve(smollm2, max_batch=8) as url:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={"base_url": f"{url}/v1/completions", "model": "smollm2",
                        "tokenizer_backend": "auto", "max_length": 2048,
                        "num_concurrent": 2, "max_retries": 1},
            tasks=["phi4_serve_mc"], task_manager=TaskManager(include_path=task_dir),
            log_samples=True, batch_size=1, cache_requests=False)
    samples = results["samples"]["phi4_serve_mc"]
    assert len(samples) == len(QUESTIONS)
    pairs, served = [], []
    for sample in samples:
        for (context, continuation), resp in zip(sample["arguments"], sample["resps"]):
            pairs.append(_encode_pair(smollm2.codec, context, continuation))
            served.append(float(resp[0][0]))
    ours = np.asarray(score(smollm2.model, [c for c, _ in pairs], [k for _, k in pairs]).total)
    np.testing.assert_allclose(served, ours, atol=TOLERANCE, rtol=0)
    print(f"max |lm-eval via server - in-process| = {np.abs(np.asarray(served) - ours).max():.2e}"
          f" nats over {len(served)} log-likelihoods")
    picked = ours.reshape(len(samples), 3).argmax(axis=1)
    acc = np.mean([int(p) == int(s["target"]) for p, s in zip(picked, samples)])
    assert results["results"]["phi4_serve_mc"]["acc,none"] == pytest.approx(acc)
