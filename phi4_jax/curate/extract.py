"""HTML to text that keeps code blocks and math, as a stage before seed curation.

    text = html_to_text(html)                      # resiliparse, MathML turned into TeX first
    Stage("extracted", extract_stage, params={"html_field": "html", "text_field": "text"})

Which extractor: measured on tests/curate/pages (a code tutorial with <pre>, a MathML lesson,
TeX notes; `python -m pytest tests/curate/test_extract.py` prints the table, docs/curate.md has
it): resiliparse (`extract_plain_text(main_content=True, preserve_formatting=True)`) keeps
<pre> blocks verbatim with their indentation and TeX delimiters as written (15 of 15 checks,
with the MathML pass); trafilatura 2.3 (`output_format="txt"`, formatting on) escapes markdown
inside math and doctest lines (`\\sum\\_{k=0}`, `\\>>>`: 13 of 15) but drops more boilerplate
(6 of 6 against resiliparse's 4 of 6). Neither renders bare MathML, so `mathml_to_tex` first
replaces every <math> element with TeX in $...$ (display: $$...$$): its TeX annotation or
alttext when it has one, else TeX built from the presentation elements (mi, mn, mo, mrow,
msup, msub, msubsup, mfrac, msqrt, mroot).
"""

from __future__ import annotations

import html as html_lib
import re
import xml.etree.ElementTree as ET

_MATH = re.compile(r"<math\b([^>]*)>(.*?)</math>", re.IGNORECASE | re.DOTALL)
_ALTTEXT = re.compile(r"""alttext\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_DISPLAY_BLOCK = re.compile(r"""display\s*=\s*["']block["']""", re.IGNORECASE)
_TEX_ANNOTATION = re.compile(
    r"<annotation\b[^>]*encoding\s*=\s*[\"']application/x-tex[\"'][^>]*>(.*?)</annotation>",
    re.IGNORECASE | re.DOTALL)
BACKENDS = ("resiliparse", "trafilatura")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def _tex(node: ET.Element) -> str:
    """TeX of a presentation-MathML element (what is not known: its children in a row)."""
    tag, kids = _local(node.tag), list(node)
    parts = [_tex(k) for k in kids]

    def group(s: str) -> str:
        return s if len(s) == 1 else "{" + s + "}"

    if tag in ("mi", "mn", "mo", "mtext", "ms"):
        return " ".join((node.text or "").split())
    if tag == "msup" and len(parts) == 2:
        return f"{parts[0]}^{group(parts[1])}"
    if tag == "msub" and len(parts) == 2:
        return f"{parts[0]}_{group(parts[1])}"
    if tag == "msubsup" and len(parts) == 3:
        return f"{parts[0]}_{group(parts[1])}^{group(parts[2])}"
    if tag == "mfrac" and len(parts) == 2:
        return f"\\frac{{{parts[0]}}}{{{parts[1]}}}"
    if tag == "msqrt":
        return "\\sqrt{" + "".join(parts) + "}"
    if tag == "mroot" and len(parts) == 2:
        return f"\\sqrt[{parts[1]}]{{{parts[0]}}}"
    if tag in ("annotation", "annotation-xml"):
        return ""
    return "".join(parts)


def _math_replacement(match: re.Match) -> str:
    attrs, body = match.group(1), match.group(2)
    tex = None
    if found := _TEX_ANNOTATION.search(body):
        tex = html_lib.unescape(found.group(1)).strip()
    elif found := _ALTTEXT.search(attrs):
        tex = html_lib.unescape(found.group(1) or found.group(2) or "").strip()
    if not tex:
        try:
            tex = _tex(ET.fromstring(f"<math>{body}</math>")).strip()
        except ET.ParseError:
            tex = " ".join(re.sub(r"<[^>]+>", " ", body).split())
    tex = html_lib.escape(tex, quote=False)
    return f"$${tex}$$" if _DISPLAY_BLOCK.search(attrs) else f"${tex}$"


def mathml_to_tex(html: str) -> str:
    """The page with each <math> element replaced by its TeX between dollar signs."""
    return _MATH.sub(_math_replacement, html)


# Spaces that HTML writes as entities (&nbsp;, &#8239;, ...) become plain spaces and zero-width
# characters go: pydoc-style pages put &nbsp; between every word, and a tokenizer would learn
# U+00A0 words.
_SPACES = str.maketrans({"\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u2009": " ",
                         "\u200b": None, "\ufeff": None})


def html_to_text(html: str, backend: str = "resiliparse", *, math: bool = True) -> str:
    """The main content of a page as text (module docstring)."""
    if math:
        html = mathml_to_tex(html)
    if backend == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        text = extract_plain_text(html, main_content=True, preserve_formatting=True,
                                  alt_texts=False)
    elif backend == "trafilatura":
        import trafilatura

        text = trafilatura.extract(html, include_formatting=True, include_tables=True,
                                   favor_recall=True, output_format="txt") or ""
    else:
        raise ValueError(f"extractor {backend!r}: one of {BACKENDS}")
    return text.translate(_SPACES).strip()


def kept_fraction(text: str, patterns: list[str]) -> float:
    """The fraction of regular expressions that match the text (a measure of what was kept)."""
    return sum(bool(re.search(p, text)) for p in patterns) / len(patterns) if patterns else 1.0


async def extract_stage(record: dict, ctx) -> dict:
    """params: html_field ("html"), text_field ("text"), backend ("resiliparse"), min_chars
    (1: an empty extraction is rejected as `empty_extraction`)."""
    from phi4_jax.synth import Reject

    p = ctx.params
    text = html_to_text(str(record.get(p.get("html_field", "html"), "")),
                        p.get("backend", "resiliparse"))
    if len(text) < int(p.get("min_chars", 1)):
        raise Reject("empty_extraction", f"{len(text)} characters of text")
    out = {k: v for k, v in record.items() if k != p.get("html_field", "html")}
    return {**out, p.get("text_field", "text"): text}
