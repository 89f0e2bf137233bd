"""Metric functions of the evaluation harness, each small enough to check by hand.

    mean_stderr([1, 0, 1])                 # (mean, sample std / sqrt(n)), as lm-eval's `mean`
    choice_metrics(lls, choices, gold)     # acc, acc_norm (per character), acc_bytes
    pass_at_k(n, c, k)                     # 1 - C(n - c, k) / C(n, k), computed stably
    simpleqa_summary(grades)               # the three buckets, accuracy given attempted, F1
    perplexity_summary(lls, tokens, bytes_, words)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation, ddof=1, over sqrt(n)); the
    error is None for fewer than two values."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return float("nan"), None
    if x.size < 2:
        return float(x.mean()), None
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def choice_metrics(lls: Sequence[float], choices: Sequence[str], gold: int | Sequence[int]
                   ) -> dict[str, float]:
    """lm-eval's multiple-choice metrics for one example (`gold`: the index, or the indices
    any of which counts as right).

    acc: the choice with the largest summed log-likelihood is the gold one. acc_norm: the same
    after dividing each log-likelihood by the choice's length in characters (lm-eval's
    `len(choice)`; the target delimiter is not counted). acc_bytes: divided by its UTF-8 bytes
    (equal to acc_norm on ASCII text). Ties go to the first choice (numpy's argmax).
    """
    ll = np.asarray(lls, np.float64)
    chars = np.array([float(len(c)) for c in choices])
    nbytes = np.array([float(len(c.encode("utf-8"))) for c in choices])
    golds = {int(gold)} if isinstance(gold, (int, np.integer)) else {int(g) for g in gold}
    return {"acc": float(int(np.argmax(ll)) in golds),
            "acc_norm": float(int(np.argmax(ll / chars)) in golds),
            "acc_bytes": float(int(np.argmax(ll / nbytes)) in golds)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n - c, k) / C(n, k), as the
    product prod_{i = n - c + 1}^{n} (1 - k / i) (no huge binomials)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1; got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


GRADES = ("correct", "not_attempted", "incorrect")


def simpleqa_summary(grades: Sequence[str]) -> dict[str, tuple[float, float | None]]:
    """SimpleQA's aggregate: the share of each grade (with standard errors), accuracy given
    attempted = correct / (correct + incorrect), and F1 = the harmonic mean of overall
    accuracy (correct share) and accuracy given attempted (no closed-form error: None)."""
    bad = sorted(set(grades) - set(GRADES))
    if bad:
        raise ValueError(f"unknown grades {bad}; expected {GRADES}")
    out = {g: mean_stderr([float(x == g) for x in grades]) for g in GRADES}
    correct, incorrect = grades.count("correct"), grades.count("incorrect")
    attempted = correct + incorrect
    given = correct / attempted if attempted else 0.0
    overall = out["correct"][0]
    f1 = 2 * given * overall / (given + overall) if given + overall > 0 else 0.0
    out["accuracy_given_attempted"] = (given, None)
    out["f1"] = (f1, None)
    return out


def perplexity_summary(lls: Sequence[float], tokens: Sequence[int], nbytes: Sequence[int],
                       words: Sequence[int]) -> dict[str, tuple[float, float | None]]:
    """Corpus-level figures from per-document log-likelihoods (nats) and sizes, as lm-eval
    aggregates them (weighted by size, not averaged over documents): token / word / byte
    perplexity = exp(-sum ll / sum size), bits_per_byte = -sum ll / sum bytes / ln 2."""
    total = -float(np.sum(np.asarray(lls, np.float64)))
    out: dict[str, tuple[float, float | None]] = {}
    for name, sizes in (("token_perplexity", tokens), ("word_perplexity", words),
                        ("byte_perplexity", nbytes)):
        n = float(np.sum(sizes))
        out[name] = (math.exp(total / n) if n else float("nan"), None)
    n = float(np.sum(nbytes))
    out["bits_per_byte"] = (total / n / math.log(2) if n else float("nan"), None)
    return out
