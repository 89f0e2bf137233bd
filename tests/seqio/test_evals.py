"""Evaluation tasks as seqio Tasks: examples, and metric values against hand-computed ones
(through seqio.Evaluator with fixed scores / predictions standing in for a model)."""

from __future__ import annotations

import json
import math

import pytest

from phi4_jax.data.tokenizer import IM_END
from phi4_jax.eval.requests import encode_pair
from phi4_jax.seqio import register_eval_task
from phi4_jax.seqio.evals import Phi4Codec, ppl_metrics

QUESTIONS = [{"question": "Capital of France?", "choices": ["Paris", "Lyon", "Marseille"],
              "answer": "Paris"},
             {"question": "Is water wet?", "choices": ["yes", "no"], "answer": 1}]
# Summed log-likelihoods per (question, choice), in example order.
SCORES = [-4.0, -3.9, -9.0, -1.0, -0.5]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def evaluate(seqio, name: str, *, score=None, predict=None) -> dict:
    evaluator = seqio.Evaluator(name, seqio.DecoderFeatureConverter(pack=False),
                                eval_split="validation", async_compute_metrics=False)

    def score_fn(ds, model_feature_shapes=None):
        return [(int(i), score[int(i)]) for i, _ in ds.as_numpy_iterator()]

    def predict_fn(ds, model_feature_shapes=None):
        return [(int(i), predict[int(i)]) for i, _ in ds.as_numpy_iterator()]

    metrics, _ = evaluator.evaluate(compute_metrics=True, score_fn=score_fn if score else None,
                                    predict_fn=predict_fn if predict else None)
    return {k: float(getattr(v, "value", v)) for k, v in metrics.result()[name].items()}


def test_mc_examples_are_our_harness_requests(seqio, tmp_path):
    task = register_eval_task(f"mc:{write_jsonl(tmp_path / 'capitals.jsonl', QUESTIONS)}")
    assert task.name == "phi4_eval.capitals" and list(task.splits) == ["validation"]
    examples = list(task.get_dataset(None, split="validation", shuffle=False,
                                     num_epochs=1).as_numpy_iterator())
    assert len(examples) == 5
    codec = Phi4Codec()
    ctx, cont = encode_pair(codec, "Question: Capital of France?\nAnswer:", " Lyon")
    assert examples[1]["inputs"].tolist() == ctx and examples[1]["targets"].tolist() == cont
    assert [int(e["is_gold"]) for e in examples] == [1, 0, 0, 0, 1]
    assert codec.decode(examples[4]["targets"]) == " no"


def test_mc_metric_equals_the_hand_computed_value(seqio, tmp_path):
    register_eval_task(f"mc:{write_jsonl(tmp_path / 'capitals.jsonl', QUESTIONS)}")
    got = evaluate(seqio, "phi4_eval.capitals", score=SCORES)
    # Question 1: the largest score is Lyon's (-3.9): wrong; per character Paris's -4/5 = -0.8
    # beats Lyon's -3.9/4 = -0.975: right. Question 2: "no" wins both ways: right.
    assert got["acc"] == pytest.approx(0.5)
    assert got["acc_norm"] == pytest.approx(1.0) and got["acc_bytes"] == pytest.approx(1.0)
    assert got["acc_stderr"] == pytest.approx(0.5)  # std([0, 1], ddof=1) / sqrt(2)


def test_simpleqa_metric_equals_the_hand_computed_value(seqio, tmp_path):
    records = [{"question": "Capital of France?", "answer": "Paris"},
               {"question": "Tallest mountain?", "answer": "Everest",
                "aliases": ["Mount Everest"]},
               {"question": "Largest ocean?", "answer": "Pacific"}]
    register_eval_task(f"simpleqa:{write_jsonl(tmp_path / 'trivia.jsonl', records)}")
    codec = Phi4Codec()
    replies = [" Paris\nQuestion: more", " I don't know", " Atlantic"]
    ids = [codec.encode(r) + [IM_END] for r in replies]  # a model's outputs, padded with 0
    width = max(map(len, ids))
    got = evaluate(seqio, "phi4_eval.trivia", predict=[i + [0] * (width - len(i)) for i in ids])
    third = 1 / 3
    assert got["correct"] == pytest.approx(third)
    assert got["not_attempted"] == pytest.approx(third)
    assert got["incorrect"] == pytest.approx(third)
    assert got["accuracy_given_attempted"] == pytest.approx(0.5)
    assert got["f1"] == pytest.approx(2 * 0.5 * third / (0.5 + third))


def test_ppl_task_and_metric(seqio, tmp_path):
    from phi4_jax.eval.tasks import Task

    codec = Phi4Codec()
    texts = ["hello world", "a b  c"]
    jsonl = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    task = register_eval_task(f"ppl:{jsonl}")
    # A token store's documents arrive as ids (load_ppl of a store directory): same examples.
    docs = [{"id": str(i), "tokens": codec.encode(t)} for i, t in enumerate(texts)]
    from_ids = register_eval_task(Task("docs_ids", "ppl", docs, "-"))
    for t in (task, from_ids):
        examples = list(t.get_dataset(None, split="validation", shuffle=False,
                                      num_epochs=1).as_numpy_iterator())
        assert [codec.decode(e["targets"]) for e in examples] == texts
    targets = [task.postprocess_fn(e["targets_pretokenized"].decode(), example=e,
                                   is_target=True) for e in examples]
    assert [t["bytes"] for t in targets] == [11, 6] and [t["words"] for t in targets] == [2, 3]
    got = ppl_metrics(targets, [-3.0, -6.0])
    ntok = sum(t["tokens"] for t in targets)
    assert ntok == sum(len(codec.encode(t)) for t in texts)
    assert got["token_perplexity"] == pytest.approx(math.exp(9.0 / ntok))
    assert got["word_perplexity"] == pytest.approx(math.exp(9.0 / 5))
    assert got["bits_per_byte"] == pytest.approx(9.0 / 17 / math.log(2))


def test_unsupported_kinds_are_named(seqio):
    from phi4_jax.eval.tasks import Task

    with pytest.raises(ValueError, match="humaneval"):
        register_eval_task(Task("he", "humaneval", [{"id": "0"}], "x"))
