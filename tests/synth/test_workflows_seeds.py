"""Seed curation (workflows/seed_curation.py): segmentation is deterministic and bounded; on the
scripted HTTP server, passages are scored by a parsed rubric score (unparseable ones re-asked,
then counted), the best kept by threshold and top fraction per page, Q&A seeds extracted."""

from __future__ import annotations

import json
import random

import pytest

from phi4_jax.synth.recipes.text import parse_score, segment
from tests.synth.scripted_server import ScriptedServer
from tests.synth.workflow_helpers import by_system, kept, rejected, run_config

WORDS = ["alpha", "beta", "gamma", "delta", "proof", "lemma", "vector", "matrix", "integral",
         "limit"]


def _page(rng: random.Random) -> str:
    parts = []
    for s in range(rng.randint(1, 5)):
        parts.append("#" * rng.randint(1, 3) + f" Section {s}")
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.25:
                body = "\n".join(f"x{i} = {i} * {rng.randint(0, 9)}"
                                 for i in range(rng.randint(1, 40)))
                parts.append(f"```python\n{body}\n```")
            else:
                sentences = [" ".join(rng.choices(WORDS, k=rng.randint(3, 30))).capitalize()
                             + "." for _ in range(rng.randint(1, 12))]
                parts.append(" ".join(sentences))
    return "\n\n".join(parts) + "\n"


def _words(text: str) -> list[str]:
    return [w for w in text.split() if not w.startswith(("#", "```"))]


@pytest.mark.parametrize("max_chars,min_chars", [(200, 1), (400, 50), (1500, 200)])
def test_segmentation_is_deterministic_bounded_and_keeps_the_text(max_chars, min_chars):
    rng = random.Random(max_chars)
    for _ in range(40):
        page = _page(rng)
        passages = segment(page, max_chars=max_chars, min_chars=min_chars)
        assert passages == segment(page, max_chars=max_chars, min_chars=min_chars)
        assert all(min_chars <= len(p["text"]) <= max_chars for p in passages)
        if min_chars == 1:  # nothing dropped: every word of the body, in order
            body = [w for line in page.splitlines() if not line.startswith("#")
                    for w in _words(line)]
            assert [w for p in passages for w in _words(p["text"])] == body


def test_segmentation_follows_structure():
    page = ("# Calculus\n\nIntro to limits and their use in analysis.\n\n## Derivatives\n\n"
            "The derivative is a limit of difference quotients.\n\n"
            "```python\ndef d(f, x, h=1e-6):\n\n    return (f(x + h) - f(x)) / h\n```\n\n"
            "Integrals\n---------\n\nArea under a curve, as a limit of sums.\n\n"
            "3.1 Series\n\nA series is a sum of a sequence's terms.\n")
    got = [(p["heading"], p["kind"], p["text"][:20]) for p in segment(page, max_chars=200,
                                                                       min_chars=10)]
    assert got == [("Calculus", "prose", "Intro to limits and "),
                   ("Calculus > Derivatives", "code", "The derivative is a "),
                   ("Calculus > Integrals", "prose", "Area under a curve, "),  # setext "-": h2
                   ("Calculus > 3.1 Series", "prose", "A series is a sum of")]
    code = segment(page, max_chars=200, min_chars=10)[1]["text"]
    assert "def d(f, x, h=1e-6):\n\n    return" in code  # a blank line inside a fence stays
    with pytest.raises(ValueError):
        segment(page, max_chars=10, min_chars=20)


def test_parse_score():
    assert parse_score("Good.\nScore: 4") == 4
    assert parse_score("**Score:** 3/5") == 3
    assert parse_score("score = 2, then Score: 5") == 5
    for bad in ("no number here", "Score: 9", "Score: 7/10", "Score: -1"):
        with pytest.raises(ValueError):
            parse_score(bad)


def _para(tag: str, i: int) -> str:
    return f"{tag} passage {i}: " + "reasoning step. " * 5


PAGES = [
    {"id": "a", "source": "site-a", "text": "\n\n".join([
        "# Topic", _para("GOOD", 0), "## More", _para("FAIR", 1), "## Again", _para("FAIR", 2),
        "## Weak", _para("MEH", 3), "## Noise", _para("JUNK", 4)])},
    {"id": "b", "text": "# Only weak\n\n" + _para("MEH", 0)},
    {"id": "c", "text": "# Unrateable\n\n" + _para("JUNK", 0)},
    {"id": "d", "pages": ["# P1\n\n" + _para("FAIR", 0), "# P2\n\n" + _para("GOOD", 1)]},
]


def score(user: str, index: int, body: dict) -> str:
    for tag, reply in (("GOOD", "Rigorous.\nScore: 5"), ("FAIR", "Useful.\nScore: 4"),
                       ("MEH", "Thin.\nScore: 2")):
        if tag in user:
            return reply
    return "I would rather not say."


def qa(user: str, index: int, body: dict) -> str:
    if "GOOD" in user:
        return json.dumps({"question": "What is 2+2?", "answer": "4", "answer_type": "math"})
    return '{"question": null, "answer": null}'


def test_seed_curation_on_the_scripted_server(tmp_path):
    reply = by_system({"You rate passages": score, "You find questions": qa})
    with ScriptedServer(reply=reply) as server:
        result = run_config("seed_curation", tmp_path, server, PAGES,
                            "max_chars=400,min_chars=20,threshold=3,top_fraction=0.5")
        junk_asks = sum("JUNK" in b["messages"][-1]["content"] for b in server.bodies)
    assert junk_asks == 2 * 3  # two JUNK passages, each asked once and re-asked twice
    assert rejected(result, "scored") == {"c": "unparseable_score"}
    assert rejected(result, "seeds") == {"b": "no_passage_kept"}
    seeds = kept(result, "seeds")
    assert sorted(seeds) == ["a/0.0", "a/0.1", "d/1.0"]  # top half of 4 scored: GOOD, 1st FAIR
    assert seeds["a/0.0"]["score"] == 5 and seeds["a/0.1"]["heading"] == "Topic > More"
    assert seeds["a/0.0"]["source"] == "site-a" and seeds["d/1.0"]["source"] == "d"
    assert seeds["a/0.0"]["page_counts"] == {
        "segmented": 5, "unparseable_score": 1, "below_threshold": 1,
        "outside_top_fraction": 1, "kept": 2}
    assert rejected(result, "qa") == {"a/0.1": "no_checkable_question"}
    qas = kept(result, "qa")
    assert sorted(qas) == ["a/0.0", "d/1.0"]
    assert qas["a/0.0"]["question"] == "What is 2+2?" and qas["a/0.0"]["kind"] == "math"
    with open(f"{result.output}/qa_seeds.jsonl") as f:
        assert len(f.readlines()) == 2


def length_scorer(text: str) -> float:
    return 5.0 if "GOOD" in text else 1.0


def test_seed_curation_with_a_pluggable_scorer(tmp_path):
    result = run_config("seed_curation", tmp_path, None, PAGES[:1],
                        "max_chars=400,min_chars=20,top_fraction=1.0,qa=false,"
                        "scorer=tests.synth.test_workflows_seeds:length_scorer")
    assert sorted(kept(result, "seeds")) == ["a/0.0"]
    assert result.stats["scored"]["requests"] == 0 and result.manifest["models"] == {}
