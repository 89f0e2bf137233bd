"""Educational-value labels (the FineWeb-Edu recipe): LLM annotations on a 0-5 rubric, the one
rounding rule, and the metrics of a classifier trained on them.

    edu_label(2.6) == 3       # round(clip(score, 0, 5)): used for the label AND the filter
    workflow = annotation_workflow(["pages.jsonl"], ModelConfig(model="phi-4", base_url=URL))
    synth.run_workflow(workflow, "out/annotate")   # out/annotate/annotated.jsonl

The rubric (templates/edu_rubric.txt, a data file) is additive: a point per condition met, the
reply ending in "Educational score: N". The annotation stage asks once at temperature 0
through the engine (cached: a rerun asks nothing) and rejects a reply with no score as
`unparseable_reply`.

`edu_label` uses Python's round (half to even, as FineWeb-Edu's `int(round(max(0, min(score,
5))))`): 2.5 -> 2, 3.5 -> 4. The filter keeps a document when edu_label(prediction) >=
threshold (3), so a regression head's 2.6 passes and 2.4 does not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from phi4_jax.synth import ModelConfig, Reject, Stage, Workflow

RUBRIC_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates",
                           "edu_rubric.txt")
_SCORE = re.compile(r"educational\s+score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
THRESHOLD = 3


def edu_label(score: float) -> int:
    """The integer label of a score: round(clip(score, 0, 5))."""
    return int(round(min(max(float(score), 0.0), 5.0)))


def parse_score(reply: str) -> int:
    """The last "Educational score: N" of a reply; ValueError when there is none."""
    found = _SCORE.findall(reply)
    if not found:
        raise ValueError("no 'Educational score: N' line in the reply")
    return edu_label(float(found[-1]))


def rubric() -> str:
    with open(RUBRIC_FILE, encoding="utf-8") as f:
        return f.read()


async def annotate_stage(record: dict, ctx) -> dict:
    """params: text_field ("text"), max_chars (2000), max_tokens (256)."""
    text = str(record.get(ctx.params.get("text_field", "text"), ""))
    text = text[:int(ctx.params.get("max_chars", 2000))]
    replies = await ctx.chat(ctx.render("rubric", {"text": text}), temperature=0.0,
                             max_tokens=int(ctx.params.get("max_tokens", 256)))
    try:
        score = parse_score(replies[0].text)
    except ValueError as e:
        raise Reject("unparseable_reply", str(e)) from None
    return {**record, "edu_score": score}


def annotation_workflow(inputs: Sequence[str], model: ModelConfig, *, text_field: str = "text",
                        id_field: str = "id", max_chars: int = 2000, shard_size: int = 256,
                        cache: str | None = None) -> Workflow:
    stage = Stage("annotated", annotate_stage, model="annotator", templates={"rubric": rubric()},
                  params={"text_field": text_field, "max_chars": max_chars})
    return Workflow(name="edu_annotation", inputs=list(inputs), stages=[stage],
                    models={"annotator": model}, id_field=id_field, shard_size=shard_size,
                    cache=cache, exports={"annotated": "annotated.jsonl"})


def macro_f1(true: Sequence[int], pred: Sequence[int]) -> float:
    """Mean F1 over the labels present in either (scikit-learn's 'macro')."""
    t, p = np.asarray(true), np.asarray(pred)
    scores = []
    for c in sorted(set(t.tolist()) | set(p.tolist())):
        tp = int(np.sum((t == c) & (p == c)))
        denom = int(np.sum(t == c) + np.sum(p == c))
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def f1_at(true: Sequence[int], pred: Sequence[int], threshold: int = THRESHOLD) -> float:
    """Binary F1 of label >= threshold."""
    t, p = np.asarray(true) >= threshold, np.asarray(pred) >= threshold
    tp = int(np.sum(t & p))
    denom = int(np.sum(t) + np.sum(p))
    return 2 * tp / denom if denom else 1.0
