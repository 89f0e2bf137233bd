"""The quality classifier: the one label rule, the annotation stage on a scripted server, a
head over frozen embeddings of a tiny model and fastText on scripted labels."""

from __future__ import annotations

import json
import random

import numpy as np

from phi4_jax.curate import edu
from phi4_jax.curate.quality import compare
from phi4_jax.synth import ModelConfig, run_workflow
from tests.synth.scripted_server import ScriptedServer, request_text

TOPIC = ["theorem", "proof", "derivative", "integral", "equation", "lemma", "example",
         "exercise", "definition", "hypothesis", "experiment", "molecule", "velocity"]
SPAM = ["buy", "cheap", "discount", "sale", "click", "offer", "login", "subscribe", "coupon",
        "shipping", "deal", "free", "winner", "casino"]


def test_label_rule_is_round_of_clip():
    assert [edu.edu_label(s) for s in (-1, 0.4, 2.5, 2.6, 3.5, 4.49, 9)] == [0, 0, 2, 3, 4, 4, 5]
    assert edu.parse_score("blah\nEducational score: 4") == 4
    assert edu.parse_score("Educational Score: 7\n") == 5


def test_metrics():
    assert edu.macro_f1([0, 1, 2], [0, 1, 2]) == 1.0
    assert edu.f1_at([1, 3, 4, 5], [3, 3, 4, 0]) == 2 * 2 / (3 + 3)


def _reply(body, index):
    text = request_text(body)
    if "UNPARSEABLE" in text:
        return "I cannot say."
    return f"Looks educational.\nEducational score: {text.count('theorem') % 6}"


def test_annotation_stage_on_a_scripted_server(tmp_path):
    rows = [{"id": f"p{i}", "text": "theorem " * i + "page"} for i in range(5)]
    rows.append({"id": "bad", "text": "UNPARSEABLE"})
    path = tmp_path / "pages.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ScriptedServer(reply=_reply) as server:
        wf = edu.annotation_workflow([str(path)], ModelConfig(model="scripted",
                                                              base_url=server.url,
                                                              revision=None))
        run_workflow(wf, str(tmp_path / "out"))
        asked = server.generations
        run_workflow(wf, str(tmp_path / "out"))  # finished: asks nothing
        assert server.generations == asked == 6
    out = [json.loads(x) for x in (tmp_path / "out/annotated.jsonl").read_text().splitlines()]
    assert [(r["id"], r["edu_score"]) for r in out] == [(f"p{i}", i) for i in range(5)]
    assert "Educational score: N" in server.bodies[0]["messages"][-1]["content"]


def _corpus(n: int, seed: int = 0):
    rng = random.Random(seed)
    texts, scores = [], []
    for _ in range(n):
        score = rng.randint(0, 5)
        words = [rng.choice(TOPIC) if rng.random() < score / 5 else rng.choice(SPAM)
                 for _ in range(40)]
        texts.append(" ".join(words))
        scores.append(score)
    return texts, scores


def test_head_and_fasttext_train_and_report_f1():
    from phi4_jax.curate.classifier import Embedder
    from phi4_jax.model import init_model
    from phi4_jax.model.config import preset

    model = init_model(preset("tiny", vocab_size=256, num_layers=1), seed=0)
    embedder = Embedder(model, lambda t: list(t.encode())[:64], max_tokens=64, batch_size=32)
    texts, scores = _corpus(240)
    metrics, head = compare(texts, scores, embedder.embed, holdout=0.25)
    print("\n", json.dumps(metrics, indent=1))
    for k in ("head", "fasttext"):
        assert 0 <= metrics[k]["macro_f1"] <= 1 and metrics[k]["docs_per_s"] > 0
    assert metrics["head"]["f1_at_threshold"] > 0.6  # well above chance (~0.5)
    assert metrics["fasttext"]["f1_at_threshold"] > 0.6
    preds = head.predict(embedder.embed(texts[:4]))
    assert preds.shape == (4,) and np.isfinite(preds).all()
