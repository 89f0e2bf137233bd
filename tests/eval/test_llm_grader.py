"""SimpleQA with the LLM grader (`--grader_url`): a grader model behind an OpenAI-compatible
server (scripted here: it answers A / B / C from the prompt it is sent) through the engine's
cached client; the buckets, accuracy given attempted and F1 against hand-computed values; an
unreadable verdict counts as incorrect; a rerun on the same cache asks the server nothing."""

from __future__ import annotations

import re

import pytest

from phi4_jax.eval.graders import LLMGrader
from phi4_jax.eval.runners import run_simpleqa, summarize
from phi4_jax.synth import LLMClient, ModelConfig, ResponseCache
from tests.eval.test_harness import ScriptedLM
from tests.synth.scripted_server import ScriptedServer, request_text

DOCS = [  # question, gold, aliases, the model's reply, the grader's verdict
    ("Capital of France?", "Paris", [], "Paris", "correct"),
    ("Largest planet?", "Jupiter", ["Jove"], "It is Jove.", "correct"),
    ("Author of Hamlet?", "Shakespeare", [], "I don't know.", "not_attempted"),
    ("Opposite of hot?", "cold", [], "warm", "incorrect"),
    ("Legs of a spider?", "8", [], "garbled", "incorrect"),  # the grader's reply has no letter
]


def grade_reply(body: dict, index: int) -> str:
    prompt = request_text(body)
    gold = re.search(r"Gold answer: (.*?)(?: \(also accepted: (.*)\))?\n", prompt)
    predicted = re.search(r"Predicted answer: (.*)\n", prompt).group(1)
    accepted = [gold.group(1), *(gold.group(2) or "").split(", ")]
    if predicted == "garbled":
        return "I am not sure how to grade this."
    if any(a and a.lower() in predicted.lower() for a in accepted):
        return "A"
    return "C" if "know" in predicted else "B"


@pytest.fixture()
def docs():
    return [{"id": str(i), "question": q, "answer": a, "aliases": al}
            for i, (q, a, al, _, _) in enumerate(DOCS)]


def test_llm_grader_buckets_and_rerun_from_cache(tmp_path, docs):
    replies = {q: r for q, _, _, r, _ in DOCS}
    lm = ScriptedLM(lambda p: [next(r for q, r in replies.items() if q in p)])
    with ScriptedServer(reply=grade_reply) as server:
        def grader():
            config = ModelConfig(model="scripted", base_url=server.url, revision=None)
            return LLMGrader(LLMClient(config, cache=ResponseCache(str(tmp_path / "cache"))))

        samples = run_simpleqa(lm, docs, grader(), max_tokens=16, seed=0)
        assert [s["grade"] for s in samples] == [v for *_, v in DOCS]
        asked = server.generations
        assert asked == len(DOCS)
        again = run_simpleqa(lm, docs, grader(), max_tokens=16, seed=0)
        assert [s["grade"] for s in again] == [s["grade"] for s in samples]
        assert server.generations == asked  # every verdict came from the cache
    metrics = summarize("simpleqa", samples)["metrics"]
    assert metrics["correct"]["value"] == pytest.approx(2 / 5)
    assert metrics["not_attempted"]["value"] == pytest.approx(1 / 5)
    assert metrics["incorrect"]["value"] == pytest.approx(2 / 5)
    given = 2 / 4  # correct / (correct + incorrect)
    assert metrics["accuracy_given_attempted"]["value"] == pytest.approx(given)
    assert metrics["f1"]["value"] == pytest.approx(2 * given * 0.4 / (given + 0.4))
