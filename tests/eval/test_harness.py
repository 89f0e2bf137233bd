"""The harness on a tiny random model (byte tokenizer) and on scripted models.

    python -m pytest -q tests/eval/test_harness.py

- scores do not depend on batch size or padding: batch 1 and batch 32 agree to 1e-5 (float32),
  and equal `inference.scoring.score` on the same tokens;
- evaluate() writes results.json, samples/TASK.jsonl and TensorBoard scalars for MC, BIG-bench,
  perplexity and SimpleQA tasks;
- HumanEval pass@k through the sandbox (a right, a wrong and a looping program), CHAMP through
  math-verify in its worker process; the command line's user errors exit 2 in one line.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from phi4_jax.eval.evaluate import EvalConfig, evaluate
from phi4_jax.eval.lm import LocalLM
from phi4_jax.eval.tasks import Task, load_bigbench, load_task

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
QUESTIONS = [(f"What is {a} plus {b}?", [str(a + b), str(a + b + 1), "none of these at all"],
              i % 3) for i, (a, b) in enumerate([(1, 2), (3, 4), (10, 20), (7, 8), (2, 2),
                                                 (100, 5), (6, 6), (9, 1), (12, 30), (5, 50),
                                                 (0, 0), (44, 4), (3, 33)])]


class ByteCodec:
    """Bytes as tokens (id = byte + 2); 1 is BOS, 0 EOS."""

    vocab_size, eos_id, bos_id, stop_ids, chat_template = 258, 0, 1, (0,), None

    def encode(self, text):
        return [b + 2 for b in text.encode("utf-8")]

    def decode(self, ids):
        return bytes(i - 2 for i in ids if i >= 2).decode("utf-8", "replace")



@pytest.fixture(scope="module")
def mc_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mc") / "arith.jsonl"
    path.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in QUESTIONS))
    return str(path)


def test_scores_do_not_depend_on_batch_size(served, mc_path):
    from phi4_jax.eval.runners import run_mc
    from phi4_jax.inference.scoring import score

    docs = load_task(f"mc:{mc_path}").docs
    one = run_mc(LocalLM(served, batch_size=1), docs, num_fewshot=2, seed=0)
    many = run_mc(LocalLM(served, batch_size=32), docs, num_fewshot=2, seed=0)
    a = np.array([s["loglik"] for s in one])
    b = np.array([s["loglik"] for s in many])
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    print(f"max |batch 1 - batch 32| = {np.abs(a - b).max():.2e} nats")
    # and equal to scoring each (context, continuation) alone, straight from inference
    lm = LocalLM(served)
    from phi4_jax.eval.requests import encode_pair

    ctx, cont = encode_pair(lm, one[3]["prompt"], " " + docs[3]["choices"][1])
    alone = float(score(served.model, [ctx], [cont]).total[0])
    assert abs(alone - one[3]["loglik"][1]) < 1e-5
    assert one[3]["prompt"].count("Question:") == 3  # two shots, then the question


def test_long_rows_are_cut_from_the_left_as_lm_eval_does(served):
    lm = LocalLM(served, batch_size=4)
    lm.max_length = 16
    ctx, cont = list(range(2, 40)), [50, 51, 52]
    cut = (ctx + cont)[-17:]
    from phi4_jax.inference.scoring import score

    want = float(score(served.model, [cut[:-3]], [cut[-3:]]).total[0])
    assert lm.loglikelihood([(ctx, cont)])[0] == pytest.approx(want, abs=1e-5)


def test_evaluate_writes_results_samples_and_tensorboard(served, mc_path, tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "Capital of France?", "answer": "Paris"}\n'
                  '{"question": "Largest planet?", "answer": "Jupiter"}\n')
    tasks = [load_task(f"mc:{mc_path}"), load_bigbench(os.path.join(FIXTURES, "bigbench_colors")),
             load_task(f"ppl:{text}"), load_task(f"simpleqa:{qa}")]
    lm = LocalLM(served, batch_size=8)
    lm.max_length = 128  # several rolling windows over the text
    out = tmp_path / "out"
    results = evaluate(lm, tasks, EvalConfig(limit=10, max_gen_tokens=8, progress=False),
                       output=str(out), tensorboard=True)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    arith = on_disk["tasks"]["arith"]
    assert arith["samples"] == 10 and set(arith["metrics"]) == {"acc", "acc_norm", "acc_bytes"}
    assert arith["metrics"]["acc"]["stderr"] is not None
    assert arith["fingerprint"] == tasks[0].fingerprint
    assert arith["model_fingerprint"] == lm.fingerprint == on_disk["model"]["fingerprint"]
    lines = (out / "samples" / "arith.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) >= {"id", "prompt", "loglik", "target", "metrics"}
    assert len(first["loglik"]) == 3
    ppl = on_disk["tasks"]["doc"]["metrics"]
    assert ppl["bits_per_byte"]["value"] > 0 and ppl["token_perplexity"]["value"] > 1
    sample = json.loads((out / "samples" / "doc.jsonl").read_text())
    assert sample["tokens"] == len(text.read_bytes())  # every byte-token scored once
    qa_metrics = on_disk["tasks"]["qa"]["metrics"]
    assert sum(qa_metrics[g]["value"] for g in ("correct", "incorrect", "not_attempted")) == 1
    assert os.listdir(out / "tensorboard")


class ScriptedLM:
    """Generation from a script: prompt -> list of outputs."""

    name, fingerprint, max_length, prefix_id = "scripted", "0" * 64, 2048, None

    def __init__(self, script):
        self.script = script

    def generate(self, prompts, *, n=1, **_):
        return [self.script(p)[:n] for p in prompts]


def test_humaneval_pass_at_k_in_the_sandbox():
    from phi4_jax.eval.code_task import run_humaneval
    from phi4_jax.eval.runners import summarize

    docs = load_task("humaneval").docs[:2]
    solutions = {docs[0]["prompt"]: "    return any(abs(a - b) < threshold for i, a in "
                 "enumerate(numbers) for b in numbers[i + 1:])\n",
                 docs[1]["prompt"]: "    return []\n"}
    loop = "    while True:\n        pass\n"
    lm = ScriptedLM(lambda p: [solutions[p], loop, "    return None\n", solutions[p]])
    samples = run_humaneval(lm, docs, n=4, ks=(1, 2), temperature=0.8, max_tokens=64, seed=0,
                            timeout_s=2.0)
    assert [s["passed"] for s in samples] == [2, 0]
    assert samples[0]["verdicts"][1] == "timeout"
    assert samples[0]["metrics"]["pass@1"] == 0.5
    assert samples[0]["metrics"]["pass@2"] == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    summary = summarize("humaneval", samples)["metrics"]
    assert summary["pass@1"]["value"] == 0.25 and summary["timeout_rate"]["value"] == 0.25


def test_champ_math_verify_in_a_worker():
    from phi4_jax.eval.runners import run_champ
    from phi4_jax.synth.math_verify import MathVerifier

    docs = load_task("champ").docs[:3]
    replies = {0: f"So the answer is $\\boxed{{{docs[0]['answer']}}}$.", 1: "The answer is 7.5",
               2: "no idea"}
    lm = ScriptedLM(lambda p: [replies[[d["problem"] in p for d in docs].index(True)]])
    samples = run_champ(lm, docs, max_tokens=16, seed=0, timeout_s=10)
    assert samples[0]["outcome"] == "equal" and samples[0]["metrics"]["correct"] == 1.0
    assert [s["outcome"] for s in samples[1:]] == ["not_equal", "not_equal"]
    with MathVerifier(timeout_s=10) as v:
        assert v.check("1/2", "$\\frac{2}{4}$") == "equal"
        assert v.check("", "3") == "error"  # no gold answer to compare with


def test_command_line_user_errors_exit_2(capsys, tmp_path):
    from phi4_jax import cli
    from phi4_jax.eval.__main__ import main

    for argv, message in [
        (["--tasks=mc:x.jsonl", f"--output={tmp_path}"], "exactly one of --model"),
        (["--model=nope", "--tasks=mmlu", f"--output={tmp_path}"], "unknown task"),
        (["--model=nope", "--tasks=mc:missing.jsonl", f"--output={tmp_path}"], "no such file"),
        (["--model=x", "--tasks=humaneval", "--pass_k=5", f"--output={tmp_path}"],
         "--pass_k needs"),
    ]:
        with pytest.raises(SystemExit) as e:
            cli.run(main, argv, prog="python -m phi4_jax.eval")
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_task_fingerprint_names_the_examples():
    a = Task("a", "mc", [{"id": "0", "context": "x", "choices": ["1", "2"], "gold": [0]}], "p")
    b = Task("b", "mc", [{"id": "0", "context": "x", "choices": ["1", "2"], "gold": [1]}], "q")
    assert a.fingerprint != b.fingerprint
