"""Majority-vote question filter: k sampled answers per question, grouped by equivalence.

    answers  sample_answers  k answers of a question {id, question, kind: math | text}
                             (one request with n=k: sample i has its own cache key)
    voted    majority_vote   final answers extracted (text.extract_answer) and grouped: math by
                             math-verify (a worker process with a timeout), other kinds by
                             normalized exact match; all agree -> rejected `all_agree` (too
                             easy), no strict majority -> `no_majority` (ambiguous); kept records
                             carry `votes`: the histogram, the majority answer and its count

An answer that cannot be extracted is a vote of its own (`null`) that agrees with nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from phi4_jax.synth.recipes.common import math_equal_many, sampling
from phi4_jax.synth.recipes.text import extract_answer, normalize_answer
from phi4_jax.synth.stage import Reject, StageContext


async def sample_answers(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """params: k (5), sampling (temperature > 0; seed)."""
    k = int(ctx.params.get("k", 5))
    if k < 2:
        raise ValueError("majority voting needs k >= 2")
    samples = await ctx.chat(ctx.render("answer", record), n=k, **sampling(ctx))
    return {**record, "samples": [s.text for s in samples]}


async def group_answers(answers: Sequence[str | None], kind: str, *,
                        timeout_s: float = 10.0) -> list[list[int]]:
    """Indices of equivalent answers, groups in order of first appearance: each answer joins
    the first group whose first answer it equals (math-verify for kind "math", normalized text
    otherwise); None joins nothing."""
    groups: list[list[int]] = []
    if kind != "math":
        by_key: dict[str, list[int]] = {}
        for i, a in enumerate(answers):
            if a is None:
                groups.append([i])
            elif (key := normalize_answer(a)) in by_key:
                by_key[key].append(i)
            else:
                by_key[key] = [i]
                groups.append(by_key[key])
        return groups
    for i, a in enumerate(answers):
        candidates = [g for g in groups if a is not None and answers[g[0]] is not None]
        outcomes = await math_equal_many([(answers[g[0]], a) for g in candidates], timeout_s) \
            if candidates else []
        match = next((g for g, o in zip(candidates, outcomes) if o == "equal"), None)
        if match is None:
            groups.append([i])
        else:
            match.append(i)
    return groups


async def majority_vote(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """params: majority (0.5: keep when the top group has more than majority * k votes and
    fewer than k, with no tie), math_timeout_s (10)."""
    answers = [extract_answer(s) for s in record["samples"]]
    kind = record.get("kind", "text")
    groups = await group_answers(answers, kind,
                                 timeout_s=float(ctx.params.get("math_timeout_s", 10)))
    groups.sort(key=lambda g: (-len(g), g[0]))  # stable: most votes, then first seen
    k = len(answers)
    histogram = [{"answer": answers[g[0]], "count": len(g), "samples": g} for g in groups]
    top = histogram[0]
    votes = {"k": k, "histogram": histogram, "majority_answer": top["answer"],
             "majority_count": top["count"], "extracted": answers}
    summary = ", ".join(f"{h['answer']!r}x{h['count']}" for h in histogram)
    if top["answer"] is not None and top["count"] == k:
        raise Reject("all_agree", f"{k}/{k} agree on {top['answer']!r}: too easy")
    tied = len(histogram) > 1 and histogram[1]["count"] == top["count"]
    if top["answer"] is None or tied or \
            top["count"] <= float(ctx.params.get("majority", 0.5)) * k:
        raise Reject("no_majority", f"ambiguous: {summary}")
    return {**record, "votes": votes}
