"""Rewrite-and-augment (workflows/rewrite.py) and self-revision (workflows/self_revision.py) on
the scripted HTTP server: one record per dataset type from its own template; revision stops when
the rubric score stops improving, at a perfect score or at the cap, keeping every round."""

from __future__ import annotations

import json
import re

from tests.synth.scripted_server import ScriptedServer
from tests.synth.workflow_helpers import by_system, kept, rejected, run_config

SCORES = {  # draft name -> rubric scores of versions v0, v1, ...
    "flat": [(4, 6), (7, 7), (8, 6), (9, 9)],   # 5 -> 7 -> 7: stops, no improvement
    "climb": [(3, 3), (5, 5), (7, 7), (9, 9), (10, 10)],  # improves every round: the cap
    "perfect": [(10, 10)],
    "exercise": [(6, 6), (6, 6)], "discussion": [(6, 6), (8, 8), (8, 8)],
    "reasoning": [(10, 10)],
}


def _version(text: str) -> tuple[str, int]:
    name, v = re.search(r"(\w+) v(\d+)", text).groups()
    return name, int(v)


def critique(user: str, index: int, body: dict) -> str:
    if "garbled" in user:
        return "It reads fine to me."
    name, v = _version(user)
    r, f = SCORES[name][v]
    return f"Review: {json.dumps({'reasoning': r, 'factual_accuracy': f, 'issues': f'fix {v}'})}"


def revise(user: str, index: int, body: dict) -> str:
    draft = user.split("Issues:")[0]
    name, v = _version(draft)
    assert f"fix {v}" in user  # the critique's issues reach the reviser
    return f"{name} v{v + 1}: a better text."


def rewrite_reply(kind: str):
    return lambda user, index, body: f"{kind} v0 from [{user}]"


ROUTES = {"You are a strict reviewer": critique, "Improve the text": revise,
          "You write exercises": rewrite_reply("exercise"),
          "You write teaching dialogues": rewrite_reply("discussion"),
          "You write structured reasoning": rewrite_reply("reasoning")}


def test_self_revision_stops_when_the_score_stops_improving(tmp_path):
    texts = [{"id": name, "text": f"{name} v0: a draft."} for name in ("flat", "climb",
                                                                         "perfect")]
    texts.append({"id": "garbled", "text": "garbled v0"})
    with ScriptedServer(reply=by_system(ROUTES)) as server:
        result = run_config("self_revision", tmp_path, server, texts, "max_rounds=3")
        garbled = sum("garbled" in b["messages"][-1]["content"] for b in server.bodies)
    assert garbled == 3  # asked, then re-asked twice (parse_retries)
    assert rejected(result, "revised") == {"garbled": "unparseable_critique"}
    out = kept(result, "revised")
    flat = out["flat"]["revision"]
    assert [r["score"] for r in flat["rounds"]] == [5, 7, 7]
    assert [r["round"] for r in flat["rounds"]] == [0, 1, 2]
    assert flat["stopped"] == "no_improvement" and flat["best_round"] == 1
    assert out["flat"]["text"] == "flat v1: a better text."
    assert flat["rounds"][0]["scores"] == {"reasoning": 4.0, "factual_accuracy": 6.0}
    assert flat["rounds"][1]["issues"] == "fix 1"
    climb = out["climb"]["revision"]
    assert [r["score"] for r in climb["rounds"]] == [3, 5, 7, 9]  # cap: 3 revisions
    assert climb["stopped"] == "max_rounds" and out["climb"]["text"].startswith("climb v3")
    perfect = out["perfect"]["revision"]
    assert perfect["stopped"] == "perfect_score" and len(perfect["rounds"]) == 1
    assert out["perfect"]["text"] == "perfect v0: a draft."


def test_rewrite_into_three_dataset_types_then_revise(tmp_path):
    seeds = [{"id": "s1", "text": "Newton's second law: F = m a."}]
    with ScriptedServer(reply=by_system(ROUTES)) as server:
        result = run_config("rewrite", tmp_path, server, seeds, "max_rounds=2")
    rewritten = kept(result, "rewritten")
    assert sorted(rewritten) == ["s1/discussion", "s1/exercise", "s1/reasoning"]
    for kind, r in rewritten.items():
        assert r["dataset_type"] == kind.split("/")[1] and r["seed_id"] == "s1"
        assert "F = m a" in r["text"]  # the seed reached each type's template
    revised = kept(result, "revised")
    assert {k: v["revision"]["stopped"] for k, v in revised.items()} == {
        "s1/exercise": "no_improvement", "s1/discussion": "no_improvement",
        "s1/reasoning": "perfect_score"}
    assert revised["s1/discussion"]["text"].startswith("discussion v1")
    assert revised["s1/exercise"]["text"].startswith("exercise v0")  # no better revision
