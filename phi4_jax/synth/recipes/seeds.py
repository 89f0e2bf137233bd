"""Seed curation stages: pages -> passages -> rubric scores -> the best passages -> Q&A seeds.

    passages  segment_pages    a page {id, text, source?} -> the page with `passages` (text.segment)
    scored    score_passages   each passage scored 0-5 for educational / reasoning value by an LLM
                               rubric (template "score"; "Score: N" parsed, re-asked on failure);
                               or by a pluggable scorer `params.scorer` = "module:function"
    seeds     keep_best        per page (a source: put a source's pages in one record's `pages`
                               to rank across them): passages over `threshold` and in the
                               `top_fraction` best, one record each
    qa        extract_qa       a passage -> {question, answer} with a checkable (short) answer,
                               or rejected (`no_checkable_question`)

Passage-level outcomes (unparseable score, below threshold, outside the top fraction) are
counted on the page record (`passage_counts`); a page with no passage left is rejected.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import math
from typing import Any

from phi4_jax.synth.recipes.common import ask_parsed, sampling
from phi4_jax.synth.recipes.text import parse_score, segment
from phi4_jax.synth.stage import Reject, StageContext, parse_reply


def _page_texts(record: dict[str, Any]) -> list[str]:
    pages = record.get("pages")
    if pages is None:
        if not isinstance(record.get("text"), str):
            raise Reject("missing_text", "a page needs `text` (or `pages`: a list of texts)")
        return [record["text"]]
    if not isinstance(pages, list) or not all(isinstance(p, str) for p in pages):
        raise Reject("missing_text", "`pages` must be a list of texts")
    return pages


async def segment_pages(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """params: max_chars (1500), min_chars (200)."""
    p = ctx.params
    passages = []
    for page, text in enumerate(_page_texts(record)):
        for k, passage in enumerate(segment(text, max_chars=int(p.get("max_chars", 1500)),
                                            min_chars=int(p.get("min_chars", 200)))):
            passages.append({**passage, "page": page, "index": k})
    if not passages:
        raise Reject("no_passages", "nothing between min_chars and max_chars")
    out = {k: v for k, v in record.items() if k not in ("text", "pages")}
    return {**out, "source": record.get("source", ctx.record_id), "passages": passages}


@functools.cache
def _scorer(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


async def score_passages(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """Scores every passage (concurrently). params: scale ([0, 5]), parse_retries (2),
    sampling, prefill (the reply's start, e.g. "Score:", for models that do not keep to the
    format), scorer (optional "module:function", passage text -> float, e.g. a quality
    classifier: then no model is asked)."""
    p = ctx.params
    lo, hi = p.get("scale", [0, 5])
    retries = int(p.get("parse_retries", 2))
    if p.get("scorer"):
        fn = _scorer(p["scorer"])
        scores: list[Any] = [float(fn(x["text"])) for x in record["passages"]]
    else:
        async def one(passage: dict[str, Any]) -> float | None:
            try:
                value, _ = await ask_parsed(
                    ctx, ctx.render("score", {**record, **passage}),
                    lambda t: parse_score(t, lo, hi), retries=retries,
                    reason="unparseable_score", prefill=p.get("prefill"), **sampling(ctx))
                return value
            except Reject:
                return None

        scores = list(await asyncio.gather(*[one(x) for x in record["passages"]]))
    if all(s is None for s in scores):
        raise Reject("unparseable_score", f"no passage's score parsed after {retries} re-asks")
    passages = [{**x, "score": s} for x, s in zip(record["passages"], scores)]
    return {**record, "passages": passages,
            "passage_counts": {"segmented": len(passages),
                               "unparseable_score": sum(s is None for s in scores)}}


async def keep_best(record: dict[str, Any], ctx: StageContext) -> list[dict[str, Any]]:
    """params: threshold (3: keep score >= threshold), top_fraction (1.0: at most
    ceil(fraction * scored passages) of the page, best first, ties in page order)."""
    p = ctx.params
    threshold, fraction = float(p.get("threshold", 3)), float(p.get("top_fraction", 1.0))
    scored = [x for x in record["passages"] if x["score"] is not None]
    ranked = sorted(scored, key=lambda x: (-x["score"], x["page"], x["index"]))
    quota = math.ceil(fraction * len(scored))
    kept = [x for x in ranked[:quota] if x["score"] >= threshold]
    counts = {**record.get("passage_counts", {}),
              "below_threshold": sum(x["score"] < threshold for x in scored),
              "outside_top_fraction": sum(x["score"] >= threshold for x in ranked[quota:]),
              "kept": len(kept)}
    if not kept:
        best = ranked[0]["score"] if ranked else None
        raise Reject("no_passage_kept", f"best score {best} < threshold {threshold:g}; "
                     f"counts {counts}")
    kept.sort(key=lambda x: (x["page"], x["index"]))
    rid = ctx.record_id
    return [{"id": f"{rid}/{x['page']}.{x['index']}", "page_id": rid, "source": record["source"],
             "heading": x["heading"], "kind": x["kind"], "text": x["text"], "score": x["score"],
             "page_counts": counts} for x in kept]


def _qa(text: str, max_answer_chars: int) -> dict[str, str] | None:
    value = parse_reply(text, "json")  # ValueError: re-asked
    question, answer = value.get("question"), value.get("answer")
    if question in (None, "") or answer in (None, ""):
        return None
    if not isinstance(question, str) or not isinstance(answer, str | int | float):
        raise ValueError("question must be a string and answer a string or number")
    answer = str(answer).strip()
    if len(answer) > max_answer_chars:
        raise ValueError(f"answer longer than {max_answer_chars} characters: not checkable")
    return {"question": question.strip(), "answer": answer,
            "answer_type": str(value.get("answer_type", "text"))}


async def extract_qa(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """A question with a short checkable answer found in the passage (template "qa": a JSON
    object {"question", "answer", "answer_type": math | text}, or nulls when there is none).
    params: max_answer_chars (100), parse_retries (2), sampling."""
    p = ctx.params
    qa, _ = await ask_parsed(ctx, ctx.render("qa", record),
                             lambda t: _qa(t, int(p.get("max_answer_chars", 100))),
                             retries=int(p.get("parse_retries", 2)), reason="unparseable_reply",
                             **sampling(ctx))
    if qa is None:
        raise Reject("no_checkable_question", "the model found no question with a checkable "
                     "answer")
    kind = "math" if qa["answer_type"] == "math" else "text"
    return {"id": ctx.record_id, "question": qa["question"], "answer": qa["answer"],
            "kind": kind, "passage": record["text"], "source": record.get("source")}
