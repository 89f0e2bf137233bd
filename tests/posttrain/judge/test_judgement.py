"""Judge replies: the shapes judges produce are parsed, invalid ones name the field."""

from __future__ import annotations

import json
import re

import pytest

from phi4_jax.posttrain.judge.judgement import JudgeParseError, parse_judgement


def good(acc=4, sty=3, det=5, faults=()) -> str:
    return json.dumps({"faults": [{"type": t, "description": "x"} for t in faults],
                       "scores": {"accuracy": acc, "style": sty, "detail": det}})


# -- parsing ----------------------------------------------------------------------------------
def test_parse_accepts_the_shapes_judges_produce():
    j = parse_judgement(good(4, 3, 5, ["logical", "factual"]))
    assert (j.accuracy, j.style, j.detail, j.overall) == (4, 3, 5, 4.0)
    assert [f.type for f in j.faults] == ["logical", "factual"]
    fenced = ("Here is my review.\n```json\n" + good(2, 2, 3) + "\n```\nHope it helps {sic}")
    assert parse_judgement(fenced).accuracy == 2
    prose = 'Sure! {"faults": ["Stylistic: uses \\"{\\" oddly"], "scores": ' \
            '{"accuracy": "5", "style": 4.0, "detail": 1}} -- end'
    j = parse_judgement(prose)
    assert (j.accuracy, j.style, j.detail) == (5, 4, 1)
    assert j.faults[0].type == "stylistic" and j.faults[0].description == 'uses "{" oddly'
    flat = json.dumps({"faults": [], "accuracy": 1, "style": 2, "detail": 3})
    assert parse_judgement(flat).detail == 3


@pytest.mark.parametrize("text, message", [
    ("I think it is fine.", "no JSON object"),
    ('{"faults": [], "scores": {"accuracy": 4, "style": 3}}', "scores.detail: missing"),
    ('{"faults": [], "scores": {"accuracy": 7, "style": 3, "detail": 3}}',
     "scores.accuracy: 7 is outside 1-5"),
    ('{"faults": [], "scores": {"accuracy": 3.5, "style": 3, "detail": 3}}',
     "scores.accuracy: expected an integer"),
    ('{"faults": [], "scores": {"accuracy": true, "style": 3, "detail": 3}}',
     "scores.accuracy: expected an integer"),
    ('{"scores": {"accuracy": 1, "style": 3, "detail": 3}}', "faults: missing"),
    ('{"faults": [{"type": "grammar"}], "scores": {"accuracy": 1, "style": 3, "detail": 3}}',
     "faults[0].type: 'grammar' is not one of"),
    ('[1, 2]', "expected a JSON object"),
])
def test_parse_errors_name_the_field(text, message):
    with pytest.raises(JudgeParseError, match=re.escape(message)):
        parse_judgement(text)
