"""One runner per task kind: documents in, one sample record per document out.

A sample record is what DIR/samples/TASK.jsonl holds: {"id", "prompt", "loglik" (per choice)
or "output", "target", "metrics": {name: value}} plus what the kind adds. `summarize` turns a
task's records into its results (each metric with its standard error).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from phi4_jax.eval import metrics as m
from phi4_jax.eval.requests import encode_pair, rolling_pairs


def fewshot_context(docs: Sequence[dict[str, Any]], index: int, k: int, seed: int) -> str:
    """k other examples of the task, each "context target", joined by blank lines (lm-eval's
    fewshot and target delimiters), before example `index`'s own context; the examples are
    drawn with a generator seeded by (seed, example id), so they do not depend on --limit."""
    doc = docs[index]
    if k <= 0:
        return doc["context"]
    others = [d for i, d in enumerate(docs) if i != index]
    shots = random.Random(f"{seed}:{doc['id']}").sample(others, min(k, len(others)))
    parts = [f"{d['context']} {d['choices'][d['gold'][0]]}" for d in shots]
    return "\n\n".join([*parts, doc["context"]])


def run_mc(lm: Any, docs: Sequence[dict[str, Any]], *, num_fewshot: int, seed: int,
           all_docs: Sequence[dict[str, Any]] | None = None, progress: Any = None
           ) -> list[dict[str, Any]]:
    """Every (example, choice) pair scored in one call, so the LM batches across examples and
    choices; continuations are " " + choice (lm-eval's target delimiter)."""
    pool = list(all_docs or docs)
    index = {d["id"]: i for i, d in enumerate(pool)}
    contexts = [fewshot_context(pool, index[d["id"]], num_fewshot, seed) for d in docs]
    pairs, owner = [], []
    for i, (d, ctx) in enumerate(zip(docs, contexts)):
        for choice in d["choices"]:
            pairs.append(encode_pair(lm, ctx, f" {choice}"))
            owner.append(i)
    lls = lm.loglikelihood(pairs, progress=progress)
    out = []
    for i, (d, ctx) in enumerate(zip(docs, contexts)):
        mine = [ll for ll, o in zip(lls, owner) if o == i]
        out.append({"id": d["id"], "prompt": ctx, "choices": d["choices"], "loglik": mine,
                    "target": d["gold"], "metrics": m.choice_metrics(mine, d["choices"],
                                                                      d["gold"])})
    return out


MATH_PROMPT = ("Problem: {problem}\nSolve the problem and put the final answer in "
               "\\boxed{{}}.\nSolution:")


def run_champ(lm: Any, docs: Sequence[dict[str, Any]], *, max_tokens: int, seed: int,
              timeout_s: float, progress: Any = None) -> list[dict[str, Any]]:
    """Greedy solutions, checked against the gold answer by math-verify in a worker process:
    `correct` is 1 for equal; `error` marks pairs math-verify could not decide in time."""
    from phi4_jax.synth.math_verify import MathVerifier

    prompts = [MATH_PROMPT.format(problem=d["problem"]) for d in docs]
    replies = lm.generate(prompts, max_tokens=max_tokens, temperature=0.0, seed=seed,
                          stop=("\nProblem:",))
    out = []
    with MathVerifier(timeout_s=timeout_s) as verifier:
        for d, prompt, (reply,) in zip(docs, prompts, replies):
            outcome = verifier.check(d["answer"], reply)
            out.append({"id": d["id"], "prompt": prompt, "output": reply,
                        "target": d["answer"], "outcome": outcome,
                        "metrics": {"correct": float(outcome == "equal"),
                                    "verify_error": float(outcome == "error")}})
            if progress is not None:
                progress(1)
    return out


QA_PROMPT = "Question: {question}\nAnswer:"


def run_simpleqa(lm: Any, docs: Sequence[dict[str, Any]], grader: Any, *, max_tokens: int,
                 seed: int, progress: Any = None) -> list[dict[str, Any]]:
    prompts = [QA_PROMPT.format(question=d["question"]) for d in docs]
    replies = [r[0].strip() for r in lm.generate(prompts, max_tokens=max_tokens,
                                                 temperature=0.0, seed=seed, stop=("\n",))]
    grades = grader.grade([(d["question"], d["answer"], d["aliases"], r)
                           for d, r in zip(docs, replies)])
    if progress is not None:
        progress(len(docs))
    return [{"id": d["id"], "prompt": p, "output": r, "target": d["answer"], "grade": g,
             "metrics": {b: float(g == b) for b in m.GRADES}}
            for d, p, r, g in zip(docs, prompts, replies, grades)]


def run_ppl(lm: Any, docs: Sequence[dict[str, Any]], *, progress: Any = None
            ) -> list[dict[str, Any]]:
    """Each document's log-likelihood over rolling windows; sizes in tokens, bytes and words
    (lm-eval's words: pieces between runs of whitespace). A token store's documents are
    decoded to text for their bytes and words."""
    texts, tokens = [], []
    for d in docs:
        if "tokens" in d:
            tokens.append(list(d["tokens"]))
            texts.append(lm.decode(tokens[-1]))
        else:
            texts.append(d["text"])
            tokens.append(lm.encode(d["text"], bos=False))  # the prefix token conditions
    windows = [rolling_pairs(t, lm.max_length, lm.prefix_id) for t in tokens]
    flat = [p for w in windows for p in w]
    lls = iter(lm.loglikelihood(flat, progress=progress))
    out = []
    for d, text, w in zip(docs, texts, windows):
        ll = sum(next(lls) for _ in w)
        scored = sum(len(k) for _, k in w)
        out.append({"id": d["id"], "prompt": text[:200], "loglik": ll, "target": None,
                    "tokens": scored, "bytes": len(text.encode("utf-8")),
                    "words": len(re.split(r"\s+", text)),
                    "metrics": {"bits_per_byte": -ll / max(len(text.encode("utf-8")), 1)
                                / 0.6931471805599453}})
    return out


def summarize(kind: str, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: {"value", "stderr"}; plus "samples": the number of examples."""
    if kind == "simpleqa":
        figures = m.simpleqa_summary([s["grade"] for s in samples])
    elif kind == "ppl":
        figures = m.perplexity_summary([s["loglik"] for s in samples],
                                       [s["tokens"] for s in samples],
                                       [s["bytes"] for s in samples],
                                       [s["words"] for s in samples])
    else:
        names = list(dict.fromkeys(k for s in samples for k in s["metrics"]))
        figures = {k: m.mean_stderr([s["metrics"][k] for s in samples if k in s["metrics"]])
                   for k in names}
    return {"metrics": {k: {"value": v, "stderr": e} for k, (v, e) in figures.items()},
            "samples": len(samples)}
