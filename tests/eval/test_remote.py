"""`--base_url` (RemoteLM) end to end against this project's server on SmolLM2-135M: the
per-choice log-likelihoods equal the in-process `--model` path's within REMOTE_TOL nats (both
float32; the server scores through `prompt_logprobs` in its own shape buckets, the harness
through `token_logprobs`, so only the reduction order differs), the same acc / acc_norm, and a
generative task (SimpleQA, greedy) gives the same replies."""

import json
import os

import pytest

from phi4_jax.eval.__main__ import main
from tests.serve.conftest import serve

pytestmark = pytest.mark.slow  # about 70 s on the shared 2-core CPU (two loads, two compiles)
REMOTE_TOL = 1e-4  # nats per choice (docs/eval.md)
QUESTIONS = [
    {"question": "What color is the sky on a clear day?", "choices": ["blue", "green", "red"],
     "answer": 0},
    {"question": "How many legs does a cat have?", "choices": ["two", "four", "six"],
     "answer": 1},
    {"question": "Which is a fruit?", "choices": ["carrot", "potato", "apple"], "answer": 2},
]
FACTS = [{"question": "What is the capital of France?", "answer": "Paris"},
         {"question": "What is 2 + 2?", "answer": "4"}]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(path)


def samples(out, task):
    with open(os.path.join(out, "samples", f"{task}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_remote_equals_in_process(smollm2, tmp_path):
    from phi4_jax.convert.gguf import smollm2_path

    mc = write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    qa = write_jsonl(tmp_path / "facts.jsonl", FACTS)
    tasks = f"mc:{mc},simpleqa:{qa}"
    flags = [f"--tasks={tasks}", "--max_gen_tokens=16", "--no_progress"]
    local, remote = str(tmp_path / "local"), str(tmp_path / "remote")
    assert main([f"--model={smollm2_path()}", f"--output={local}", *flags]) == 0
    with serve(smollm2) as url:
        assert main([f"--base_url={url}/v1", f"--output={remote}", *flags]) == 0
    ours, theirs = samples(local, "q"), samples(remote, "q")
    assert [s["prompt"] for s in ours] == [s["prompt"] for s in theirs]
    worst = max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x["loglik"],
                                                                         y["loglik"]))
    assert worst <= REMOTE_TOL, worst
    assert [s["metrics"] for s in ours] == [s["metrics"] for s in theirs]
    gen_local, gen_remote = samples(local, "facts"), samples(remote, "facts")
    assert len(gen_remote) == len(FACTS) and all(isinstance(s["output"], str)
                                                 for s in gen_remote)
    assert [s["output"] for s in gen_local] == [s["output"] for s in gen_remote]
    print(f"largest per-choice difference {worst:.2e} nats")
