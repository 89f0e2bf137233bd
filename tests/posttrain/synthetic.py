"""Synthetic samplers and oracles with known p(success | prefix), for PTS tests.

* `CurveSampler`: each problem has one designed solution whose true p along its prefixes is a
  given curve (multiples of 1/n); rollouts are stratified so the estimate equals the curve
  exactly (no sampling noise). Success rollouts start with UP, failures with DOWN.
* `CoinSampler`: a real stochastic "model" (numpy draws keyed by the rollout's row id): up to L
  tokens of FILL, where each step instead emits WIN or LOSE with probability q; afterwards it
  fills to L and emits EOS; if no decision came, a final HEADS / TAILS coin decides. By
  symmetry p = 0.5 on every undecided prefix, 1 after WIN or HEADS, 0 after LOSE or TAILS.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from phi4_jax.posttrain.pts.oracles import Question
from phi4_jax.posttrain.pts.search import Problem
from phi4_jax.posttrain.sampler import Rollout, row_id

WIN, LOSE, EOS, UP, DOWN, FILL, HEADS, TAILS = 1, 2, 3, 4, 5, 6, 7, 8


class MarkerOracle:
    """Success iff the reply contains WIN or HEADS (decoded ids are space-separated)."""

    def __init__(self) -> None:
        self.calls = 0

    def check(self, question: Question, completions: Sequence[str]) -> list[bool]:
        self.calls += len(completions)
        return [bool({str(WIN), str(HEADS)} & set(c.split())) for c in completions]


class _Tokens:
    tokenizer_name = "synthetic"

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(t)) for t in ids)

    def encode(self, text: str) -> list[int]:
        return [int(t) if t.isdigit() else 700 + len(t) for t in text.split()]

    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return [900 + len(m["content"]) % 50 for m in messages] + [999]


@dataclasses.dataclass(frozen=True)
class Curve:
    """prompt, solution tokens (ending with WIN or LOSE), their log-probs, true p[0..len]."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    p: tuple[float, ...]

    def pivots(self, gap: float) -> list[int]:
        return [i for i in range(len(self.tokens)) if abs(self.p[i + 1] - self.p[i]) >= gap - 1e-9]

    def problem(self) -> Problem:
        q = Question(id=f"curve{self.prompt[0]}", prompt="synthetic")
        return Problem(q, self.prompt, len(self.prompt))

    def rollout(self) -> Rollout:
        return Rollout(self.tokens, self.logprobs, True)


class CurveSampler(_Tokens):
    """Stratified rollouts whose success fraction equals the curve at every solution prefix."""

    def __init__(self, curves: Sequence[Curve]):
        self.index = {c.prompt + c.tokens[:i]: (c, i) for c in curves
                      for i in range(len(c.tokens))}
        self.calls: list[int] = []

    def sample(self, prefixes: Sequence[Sequence[int]], n: int) -> list[list[Rollout]]:
        self.calls.append(len(prefixes))
        out = []
        for prefix in prefixes:
            curve, i = self.index[tuple(prefix)]  # KeyError: the search left the solution
            k = round(curve.p[i] * n)
            out.append([Rollout((UP, WIN), (-1.0, -0.1), True)] * k
                       + [Rollout((DOWN, LOSE), (-1.0, -0.1), True)] * (n - k))
        return out


def random_curve(rng: np.random.Generator, index: int, n: int, gap: float,
                 max_small: int = 5) -> Curve:
    """A monotone curve: random small steps (< gap) and 1-3 large ones (the pivots), which sit
    on low-probability tokens (log p in [-6, -2]); the rest have log p in [-0.7, -0.01].
    Up to `max_small` small steps; the last token's step is whatever reaches 0 or 1."""
    unit, gap_units = 1.0 / n, math.ceil(gap * n - 1e-9)
    while True:
        length = int(rng.integers(12, 60))
        p0 = int(rng.integers(math.ceil(0.2 * n), math.floor(0.8 * n) + 1))
        up = bool(rng.integers(2))
        steps = np.zeros(length, int)
        big = rng.choice(length - 1, size=int(rng.integers(1, 4)), replace=False)
        steps[big] = rng.integers(gap_units, gap_units + 4, size=big.size)
        small = rng.choice(length - 1, size=int(rng.integers(0, max_small + 1)),
                           replace=False)
        small = small[~np.isin(small, big)]
        steps[small] = rng.integers(1, gap_units, size=small.size)
        distance = (n - p0) if up else p0
        rest = distance - steps[:-1].sum()
        if rest >= 0:
            steps[-1] = rest
            break
    sign = 1 if up else -1
    p = np.concatenate([[p0], p0 + sign * np.cumsum(steps)]) * unit
    logprobs = np.where(steps >= gap_units, rng.uniform(-6, -2, length),
                        rng.uniform(-0.7, -0.01, length))
    tokens = tuple(int(t) for t in rng.integers(10, 800, length - 1)) + ((WIN if up else LOSE),)
    return Curve((1000 + index,), tokens, tuple(float(x) for x in logprobs),
                 tuple(float(x) for x in p))


@dataclasses.dataclass
class CoinSampler(_Tokens):
    """See the module docstring; `length` L, decision probability `q` per step."""

    length: int = 12
    q: float = 0.1
    seed: int = 0
    prompt_len: int = 2
    sampled_prefixes: list[tuple[int, ...]] = dataclasses.field(default_factory=list)

    def _one(self, reply: Sequence[int], rng: np.random.Generator) -> Rollout:
        decided = any(t in (WIN, LOSE, HEADS, TAILS) for t in reply)
        tokens: list[int] = []
        lps: list[float] = []
        pos = len(reply)
        while pos < self.length:
            if decided:
                tokens.append(FILL)
                lps.append(0.0)
            else:
                u = rng.random()
                t = WIN if u < self.q else LOSE if u < 2 * self.q else FILL
                tokens.append(t)
                lps.append(math.log(self.q) if t != FILL else math.log(1 - 2 * self.q))
                decided = t != FILL
            pos += 1
        if not decided and pos == self.length:
            tokens.append(HEADS if rng.random() < 0.5 else TAILS)
            lps.append(math.log(0.5))
        tokens.append(EOS)
        lps.append(0.0)
        return Rollout(tuple(tokens), tuple(lps), True)

    def sample(self, prefixes: Sequence[Sequence[int]], n: int) -> list[list[Rollout]]:
        out = []
        for prefix in prefixes:
            self.sampled_prefixes.append(tuple(prefix))
            reply = [t for t in prefix[self.prompt_len:]]
            out.append([self._one(reply, np.random.default_rng([self.seed, row_id(prefix, j)]))
                         for j in range(n)])
        return out


def coin_problems(count: int) -> list[Problem]:
    return [Problem(Question(id=f"coin{i}", prompt=f"coin {i}"), (500 + i, 999), 2)
            for i in range(count)]


def true_coin_pivots(tokens: Sequence[int]) -> list[int]:
    """Positions where p changes in a CoinSampler solution: the deciding token."""
    return [i for i, t in enumerate(tokens) if t in (WIN, LOSE, HEADS, TAILS)]
