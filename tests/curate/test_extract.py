"""HTML to text: resiliparse (the choice) keeps every code block and formula of the fixture
pages; the table of both extractors is printed (-s) for docs/curate.md."""

from __future__ import annotations

import asyncio
import os

import pytest

from phi4_jax.curate.extract import BACKENDS, extract_stage, html_to_text, kept_fraction
from tests.curate.pages.expect import DROP, KEEP

PAGES = os.path.join(os.path.dirname(__file__), "pages")


def _page(name: str) -> str:
    with open(os.path.join(PAGES, name), encoding="utf-8") as f:
        return f.read()


def test_measure_extractors_and_keep_everything_with_the_chosen_one():
    table = {}
    for backend in BACKENDS:
        for math in (False, True):
            texts = {p: html_to_text(_page(p), backend, math=math) for p in KEEP}
            kept = sum(kept_fraction(t, KEEP[p]) * len(KEEP[p]) for p, t in texts.items())
            dropped = sum((1 - kept_fraction(t, DROP[p])) * len(DROP[p]) for p, t in texts.items())
            table[(backend, math)] = (round(kept), round(dropped))
    print("\nextractor, MathML->TeX pass: kept of 15, boilerplate dropped of 6")
    for k, v in table.items():
        print(f"  {k[0]:<12} {str(k[1]):<6} {v[0]:>3} {v[1]:>3}")
    assert table[("resiliparse", True)][0] == 15
    assert table[("resiliparse", True)][0] >= max(v[0] for v in table.values())


def test_mathml_without_annotation_becomes_tex():
    text = html_to_text("<html><body><article><p>Root: <math><msqrt><mi>x</mi></msqrt>"
                        "<mo>+</mo><mfrac><mn>1</mn><mn>2</mn></mfrac></math> done, and a "
                        "long enough paragraph to be main content of the page.</p></article>"
                        "</body></html>")
    assert r"$\sqrt{x}+\frac{1}{2}$" in text


def test_stage_function():
    from phi4_jax.synth import Reject

    class Ctx:
        params = {"html_field": "html"}

    out = asyncio.run(extract_stage({"id": "a", "html": _page("code_tutorial.html")}, Ctx()))
    assert "html" not in out and "mid = (lo + hi) // 2" in out["text"]
    with pytest.raises(Reject):
        asyncio.run(extract_stage({"id": "b", "html": "<html></html>"}, Ctx()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_entity_spaces_become_plain_spaces(backend):
    words = "&nbsp;".join(["bisect", "returns", "the", "insertion", "point", "for", "x"] * 6)
    html = (f"<html><body><article><p>{words}</p><p>narrow&#8239;no-break and zero&#8203;width"
            " characters in a second paragraph long enough to be kept.</p></article></body></html>")
    text = html_to_text(html, backend)
    assert "bisect returns the insertion point" in text
    assert not {"\u00a0", "\u202f", "\u200b"} & set(text), repr(text)
