"""Rewrite-and-augment and self-revision stages.

    rewritten  rewrite      a seed {id, text, ...} -> one record per dataset type
                            (`params.types`, each a template of that name: exercise,
                            discussion, reasoning, ...), id SEED/TYPE, the reply in `text`
    revised    self_revise  critique against a rubric (template "critique": a JSON object of
                            1-10 scores per criterion, e.g. reasoning and factual_accuracy, plus
                            "issues"), revise (template "revise"), critique again; stop when the
                            score does not improve by more than `min_gain`, at a perfect score,
                            or after `max_rounds` revisions. Every round is kept in `rounds`;
                            `text` becomes the best round's.
"""

from __future__ import annotations

from typing import Any

from phi4_jax.synth.recipes.common import ask_parsed, sampling
from phi4_jax.synth.stage import Reject, StageContext, parse_reply


async def rewrite(record: dict[str, Any], ctx: StageContext) -> list[dict[str, Any]]:
    """params: types (the template names, in order), sampling."""
    types = list(ctx.params.get("types", []))
    if not types:
        raise ValueError("rewrite: params.types names no dataset type")
    out = []
    for kind in types:
        reply = (await ctx.chat(ctx.render(kind, record), **sampling(ctx)))[0]
        text = reply.text.strip()
        if not text:
            raise Reject("empty_reply", f"dataset type {kind}: the model returned nothing")
        if reply.finish_reason == "length" and ctx.params.get("reject_truncated", True):
            raise Reject("truncated_reply", f"dataset type {kind}: hit max_tokens")
        out.append({"id": f"{ctx.record_id}/{kind}", "seed_id": ctx.record_id,
                    "dataset_type": kind, "seed": record.get("text", ""), "text": text})
    return out


def parse_critique(text: str, criteria: list[str], scale: tuple[float, float]
                   ) -> dict[str, Any]:
    """{"scores": {criterion: float}, "score": their mean, "issues": str}; ValueError when a
    criterion is missing, not a number or off the scale."""
    value = parse_reply(text, "json")
    scores = {}
    for c in criteria:
        v = value.get(c)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"criterion {c!r}: no numeric score")
        if not scale[0] <= v <= scale[1]:
            raise ValueError(f"criterion {c!r}: {v} is off the {scale[0]:g}-{scale[1]:g} scale")
        scores[c] = float(v)
    return {"scores": scores, "score": sum(scores.values()) / len(scores),
            "issues": str(value.get("issues", ""))[:2000]}


async def self_revise(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """params: criteria (["reasoning", "factual_accuracy"]), scale ([1, 10]), max_rounds (3
    revisions), min_gain (0: a revision must raise the mean score above the best so far),
    parse_retries (2), field ("text"), critique_sampling, revise_sampling."""
    p = ctx.params
    criteria = list(p.get("criteria", ["reasoning", "factual_accuracy"]))
    scale = tuple(p.get("scale", [1, 10]))
    field, retries = p.get("field", "text"), int(p.get("parse_retries", 2))
    max_rounds, min_gain = int(p.get("max_rounds", 3)), float(p.get("min_gain", 0))

    async def critique(text: str) -> dict[str, Any]:
        value, _ = await ask_parsed(ctx, ctx.render("critique", {**record, field: text}),
                                    lambda t: parse_critique(t, criteria, scale),
                                    retries=retries, reason="unparseable_critique",
                                    **sampling(ctx, "critique_sampling"))
        return value

    if not isinstance(record.get(field), str) or not record[field].strip():
        raise Reject("missing_text", f"no text in field {field!r}")
    rounds = [{"round": 0, "text": record[field], **await critique(record[field])}]
    best, stop = rounds[0], "max_rounds"
    for r in range(1, max_rounds + 1):
        if best["score"] >= scale[1]:
            stop = "perfect_score"
            break
        prior = rounds[-1]
        reply = await ctx.chat(ctx.render("revise", {**record, field: prior["text"],
                                                     "issues": prior["issues"]}),
                               **sampling(ctx, "revise_sampling"))
        text = reply[0].text.strip()
        if not text:
            stop = "empty_revision"
            break
        rounds.append({"round": r, "text": text, **await critique(text)})
        if rounds[-1]["score"] <= best["score"] + min_gain:
            stop = "no_improvement"
            break
        best = rounds[-1]
    return {**record, field: best["text"], "revision": {
        "rounds": rounds, "best_round": best["round"], "best_score": best["score"],
        "initial_score": rounds[0]["score"], "stopped": stop}}


def revision_stage(o: dict[str, Any], input_stage: str | None = None) -> dict[str, Any]:
    """The self-revision stage of a workflow config (workflows/rewrite.py, self_revision.py;
    template paths relative to workflows/); `o`: the config's options (max_rounds, min_gain,
    max_tokens)."""
    return {"name": "revised", "kind": "python", "fn": f"{__name__}:self_revise",
            "model": "teacher", **({"input": input_stage} if input_stage else {}),
            "templates": {"critique": "templates/revise_critique.txt",
                          "revise": "templates/revise_revise.txt"},
            "params": {"criteria": ["reasoning", "factual_accuracy"], "scale": [1, 10],
                       "max_rounds": o["max_rounds"], "min_gain": o["min_gain"],
                       "parse_retries": 2,
                       "critique_sampling": {"temperature": 0.0, "max_tokens": 512},
                       "revise_sampling": {"temperature": 0.3, "max_tokens": o["max_tokens"]}}}
