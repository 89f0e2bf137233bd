"""Pivotal Token Search (Phi-4 report, section 4.3): tokens that swing p(success) by >= p_gap.

For a question Q with an oracle, p(success | prefix) is estimated by sampling `n_samples`
completions from the prefix and checking them (memoized per question and prefix: a question's
estimates never depend on which other questions share its batch, so a resumed run that batches
questions differently finds the same pivots). Questions with
p_min <= p(Q) <= p_max are searched: a full solution T is taken from the rollouts at Q, and

    Subdivide(prefix, T): stop if |T| <= 1 or |p(prefix) - p(prefix + T)| < p_gap;
                          else split T (cumulative log-prob midpoint), recurse left, then right.

Every single-token segment with |delta p| >= p_gap is pivotal. Each split needs exactly one new
estimate (p at the split point), so the recursion runs breadth first: all splits of one depth,
over every question and solution of a batch, are estimated in one sampler call. The pivots and
the prefixes estimated are the same as the paper's depth-first order.

A pivot yields DPO pairs (prompt = Q + t1..t(i-1), one token raising p, one lowering it): the
pivotal token against an alternative first token seen in the rollouts at that prefix, whose
empirical success rate lies on the other side of p(prefix) (the most extreme first).
`false_pivot_probability` is the sampling-noise rate of a spurious |delta p| >= p_gap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from phi4_jax.posttrain.pts.oracles import Oracle, Question
from phi4_jax.posttrain.records import Pair, Pivot
from phi4_jax.posttrain.sampler import Rollout, Sampler

_EPS = 1e-9  # tolerance of the |delta p| >= p_gap comparison (p values are multiples of 1/n)


@dataclasses.dataclass(frozen=True)
class PTSConfig:
    """n_samples: rollouts per prefix estimate. split: 'logprob' (the paper's cumulative
    log-prob midpoint) or 'token' (token-count midpoint, for comparison)."""

    n_samples: int = 16
    p_gap: float = 0.2
    p_min: float = 0.2
    p_max: float = 0.8
    split: Literal["logprob", "token"] = "logprob"
    solutions_per_question: int = 2
    pairs_per_pivot: int = 1

    def __post_init__(self) -> None:
        if self.n_samples < 1 or not 0 < self.p_gap <= 1 or self.split not in ("logprob", "token"):
            raise ValueError(f"invalid PTSConfig {self}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A question in token ids: `prompt_ids` is the context replies are sampled from (chat
    prompt plus any forced reply prefix); the reply's text starts at `prompt_ids[reply_start:]`."""

    question: Question
    prompt_ids: tuple[int, ...]
    reply_start: int


@dataclasses.dataclass
class Estimate:
    """p(success | prefix) from `n` checked rollouts; `first` maps a rollout's first token to
    [successes, count]."""

    p: float
    n: int
    rollouts: list[Rollout]
    success: list[bool]
    first: dict[int, list[int]]


@dataclasses.dataclass
class Stats:
    """Work done: oracle_calls counts completions checked (also per question id)."""

    oracle_calls: int = 0
    prefix_evals: int = 0     # prefixes estimated by sampling
    rows_sampled: int = 0
    per_question: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, question_id: str, calls: int) -> None:
        self.oracle_calls += calls
        self.per_question[question_id] = self.per_question.get(question_id, 0) + calls


Key = tuple[str, tuple[int, ...]]  # (question id, prefix ids): what the memo is keyed by


def memo_key(problem: Problem, prefix: tuple[int, ...]) -> Key:
    return problem.question.id, prefix


class Estimator:
    """Memoized (per question and prefix), batched p(success | prefix) by sampling and oracle
    checks."""

    def __init__(self, sampler: Sampler, oracle: Oracle, n_samples: int,
                 stats: Stats | None = None):
        self.sampler, self.oracle, self.n = sampler, oracle, n_samples
        self.stats = stats if stats is not None else Stats()
        self.memo: dict[Key, Estimate] = {}
        self.errors: dict[str, str] = {}  # question id -> why its oracle refused it

    def estimate(self, requests: Sequence[tuple[Problem, tuple[int, ...]]]) -> None:
        """Fills the memo for every (problem, prefix) not estimated yet, in one sampler call."""
        todo: dict[Key, Problem] = {}
        for problem, prefix in requests:
            if memo_key(problem, prefix) not in self.memo:
                todo.setdefault(memo_key(problem, prefix), problem)
        if not todo:
            return
        keys = list(todo)
        prefixes = [prefix for _, prefix in keys]
        rollouts = self.sampler.sample(prefixes, self.n)
        items: list[tuple[int, int, str]] = []  # (prefix index, rollout index, reply text)
        groups: dict[str, list[int]] = {}       # question id -> indices into items
        for i, (k, rows) in enumerate(zip(keys, rollouts)):
            problem, prefix = todo[k], k[1]
            reply = list(prefix[problem.reply_start:])
            for j, r in enumerate(rows):
                groups.setdefault(problem.question.id, []).append(len(items))
                items.append((i, j, self.sampler.decode(reply + list(r.tokens))))
        verdicts = [[False] * len(rows) for rows in rollouts]
        for ks in groups.values():
            question = todo[keys[items[ks[0]][0]]].question
            try:
                checked = self.oracle.check(question, [items[x][2] for x in ks])
            except ValueError as e:  # the question is unusable (e.g. unparsable gold answer)
                self.errors[question.id] = f"{type(e).__name__}: {e}"
                checked = [False] * len(ks)
            if len(checked) != len(ks):
                raise RuntimeError(f"oracle returned {len(checked)} verdicts for {len(ks)} "
                                   f"completions of question {question.id}")
            for x, ok in zip(ks, checked):
                verdicts[items[x][0]][items[x][1]] = bool(ok)
            self.stats.count(question.id, len(ks))
        for k, rows, ok in zip(keys, rollouts, verdicts):
            first: dict[int, list[int]] = {}
            for r, s in zip(rows, ok):
                if r.tokens:
                    stat = first.setdefault(r.tokens[0], [0, 0])
                    stat[0] += int(s)
                    stat[1] += 1
            self.memo[k] = Estimate(sum(ok) / len(ok), len(ok), rows, ok, first)
            self.stats.rows_sampled += len(ok)
        self.stats.prefix_evals += len(prefixes)

    def p(self, k: Key) -> float:
        return self.memo[k].p


def split_point(logprobs: Sequence[float], a: int, b: int, rule: str) -> int:
    """Where segment [a, b) (b - a >= 2) of a solution splits; returns m with a < m < b.

    'token': the middle index. 'logprob': the index where the cumulative -log p of the segment
    is closest to half its total (ties go to the index nearest the middle; all-zero log-probs
    give the token midpoint)."""
    mid = a + (b - a) // 2
    if rule == "token":
        return mid
    w = np.minimum(-np.asarray(logprobs[a:b], np.float64), 1e4)
    left = np.cumsum(w)[:-1]  # left[k]: mass of the left part [a, a + k + 1)
    m = np.arange(a + 1, b)
    key = np.lexsort((np.abs(m - mid), np.abs(left - w.sum() / 2)))
    return int(m[key[0]])


@dataclasses.dataclass
class SolutionSearch:
    """One full solution under search; `pivots` holds (position, p_before, p_after)."""

    problem: Problem
    solution: Rollout
    index: int
    pivots: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)

    def prefix(self, i: int) -> tuple[int, ...]:
        return self.problem.prompt_ids + self.solution.tokens[:i]

    def key(self, i: int) -> Key:
        return memo_key(self.problem, self.prefix(i))


def subdivide(searches: Sequence[SolutionSearch], est: Estimator, config: PTSConfig) -> None:
    """Breadth-first Subdivide over all searches; fills `search.pivots` (position, p0, p1).

    Needs p at each search's empty prefix and full solution in `est.memo`."""
    frontier = [(s, 0, len(s.solution.tokens)) for s in searches]
    while frontier:
        splits = []
        for s, a, b in frontier:
            p_a, p_b = est.p(s.key(a)), est.p(s.key(b))
            if abs(p_b - p_a) < config.p_gap - _EPS:
                continue
            if b - a == 1:
                s.pivots.append((a, p_a, p_b))
            else:
                splits.append((s, a, split_point(s.solution.logprobs, a, b, config.split), b))
        est.estimate([(s.problem, s.prefix(m)) for s, _, m, _ in splits])
        frontier = [seg for s, a, m, b in splits for seg in ((s, a, m), (s, m, b))]
    for s in searches:
        s.pivots.sort()


def choose_solutions(est: Estimate, k: int) -> list[int]:
    """Up to k rollouts (completed ones only) to search, alternating failed and successful."""
    fails = [j for j, (r, ok) in enumerate(zip(est.rollouts, est.success)) if r.stopped and not ok]
    wins = [j for j, (r, ok) in enumerate(zip(est.rollouts, est.success)) if r.stopped and ok]
    out: list[int] = []
    while len(out) < k and (fails or wins):
        for pool in (fails, wins):
            if pool and len(out) < k:
                out.append(pool.pop(0))
    return out


def pivot_pairs(est: Estimate, token: int, p_before: float, p_after: float, limit: int
                ) -> list[tuple[int, int, float, int]]:
    """(chosen, rejected, alternative's empirical p, its count) for a pivot after `est`'s prefix.

    The alternative is a different first token of the rollouts at the prefix whose success rate
    lies on the other side of p_before (below it if the pivot raises p, above if it lowers)."""
    raises = p_after > p_before
    alts = []
    for alt, (wins, count) in est.first.items():
        q = wins / count
        if alt != token and (q < p_before if raises else q > p_before):
            alts.append((q if raises else -q, -count, alt))
    out = []
    for signed_q, neg_count, alt in sorted(alts)[:limit]:
        chosen, rejected = (token, alt) if raises else (alt, token)
        out.append((chosen, rejected, abs(signed_q), -neg_count))
    return out


@dataclasses.dataclass
class QuestionResult:
    """The outcome for one question: its estimated p, whether it was searched, and records."""

    question_id: str
    p: float
    searched: bool
    solutions: list[dict]
    pivots: list[Pivot]
    pairs: list[Pair]
    error: str | None = None


def search_solutions(est: Estimator, jobs: Sequence[tuple[Problem, Rollout, int]],
                     config: PTSConfig) -> list[SolutionSearch]:
    """Searches given full solutions (problem, solution, index); returns searches with pivots.

    p at each problem's prompt is estimated if missing; p at a full solution is its own oracle
    verdict (one check, unless already in the memo)."""
    est.estimate([(problem, problem.prompt_ids) for problem, _, _ in jobs])
    searches = [SolutionSearch(problem, solution, k) for problem, solution, k in jobs]
    for s in searches:
        full = s.key(len(s.solution.tokens))
        if full not in est.memo:
            reply = est.sampler.decode(list(full[1][s.problem.reply_start:]))
            (ok,) = est.oracle.check(s.problem.question, [reply])
            est.stats.count(s.problem.question.id, 1)
            est.memo[full] = Estimate(float(ok), 1, [], [bool(ok)], {})
    subdivide(searches, est, config)
    return searches


def search_batch(problems: Sequence[Problem], sampler: Sampler, oracle: Oracle,
                 config: PTSConfig, stats: Stats | None = None) -> list[QuestionResult]:
    """Pivotal Token Search over a batch of problems (sampled together; memo per question).

    Each question's result depends on that question alone (given a sampler whose rollouts are
    keyed by prefix and index, as `ModelSampler`'s are), not on the rest of the batch.

    Estimates p(Q); for questions within [p_min, p_max] searches up to
    `solutions_per_question` completed rollouts at Q (first a failed one, then a successful
    one, alternating), and turns pivots into `Pivot` and `Pair` records. A question whose
    oracle raises ValueError (bad gold answer, say) is not searched and carries the `error`."""
    est = Estimator(sampler, oracle, config.n_samples, stats)
    est.estimate([(pr, pr.prompt_ids) for pr in problems])
    jobs, results = [], []
    for pr in problems:
        root = est.memo[memo_key(pr, pr.prompt_ids)]
        error = est.errors.get(pr.question.id)
        searched = error is None and config.p_min - _EPS <= root.p <= config.p_max + _EPS
        chosen = choose_solutions(root, config.solutions_per_question) if searched else []
        for k, j in enumerate(chosen):
            full = memo_key(pr, pr.prompt_ids + root.rollouts[j].tokens)
            ok = root.success[j]  # a completed rollout's p is its own verdict: no new check
            est.memo.setdefault(full, Estimate(float(ok), 1, [], [ok], {}))
            jobs.append((pr, root.rollouts[j], k))
        results.append(QuestionResult(pr.question.id, root.p, searched, [], [], [], error))
    by_id = {r.question_id: r for r in results}
    for s in search_solutions(est, jobs, config):
        _records(s, est, config, sampler.tokenizer_name, by_id[s.problem.question.id])
    return results


def _records(s: SolutionSearch, est: Estimator, config: PTSConfig, tokenizer: str,
             out: QuestionResult) -> None:
    qid = s.problem.question.id
    n_tokens = len(s.solution.tokens)
    out.solutions.append({"index": s.index, "tokens": n_tokens, "pivots": len(s.pivots),
                          "correct": est.p(s.key(n_tokens)) == 1.0})
    seen = {(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in out.pairs}
    seen_pivots = {(p.prefix_ids, p.token_id) for p in out.pivots}
    for pos, p0, p1 in s.pivots:
        prefix, token = s.prefix(pos), s.solution.tokens[pos]
        if (prefix, token) in seen_pivots:  # two solutions sharing a prefix: one record
            continue
        pid = f"{qid}/s{s.index}/t{pos}"
        meta = {"split": config.split, "p_gap": config.p_gap,
                "logprob": s.solution.logprobs[pos], "solution_correct":
                out.solutions[-1]["correct"], "reply_start": s.problem.reply_start}
        out.pivots.append(Pivot(pid, qid, prefix, token, p0, p1, pos, config.n_samples,
                                tokenizer, meta))
        for chosen, rejected, q, count in pivot_pairs(est.memo[s.key(pos)], token, p0, p1,
                                                      config.pairs_per_pivot):
            key = (prefix, (chosen,), (rejected,))
            if key in seen:
                continue
            seen.add(key)
            out.pairs.append(Pair(f"pts/{pid}/{chosen}-{rejected}", prefix, (chosen,),
                                  (rejected,), "pts", tokenizer,
                                  {"question_id": qid, "pivot_id": pid, "p_before": p0,
                                   "p_after": p1, "alt_token": chosen if chosen != token
                                   else rejected, "alt_p": q, "alt_count": count,
                                   "n_samples": config.n_samples}))


# -- sampling noise --------------------------------------------------------------------------
def _binomial_pmf(n: int, p: float) -> np.ndarray:
    k = np.arange(n + 1)
    if p <= 0.0 or p >= 1.0:
        return (k == (n if p >= 1.0 else 0)).astype(np.float64)
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                         for i in k])
    return np.exp(log_comb + k * math.log(p) + (n - k) * math.log1p(-p))


def false_pivot_probability(n: int, p_gap: float, p_before: float = 0.5,
                            p_after: float | None = None) -> float:
    """P(|X/n - Y/n| >= p_gap) for independent X ~ Bin(n, p_before), Y ~ Bin(n, p_after).

    With p_after == p_before (the default: true delta 0) this is the chance that sampling noise
    alone makes a token look pivotal; with p_after != p_before it is the chance that a true
    jump is detected. Exact (the difference's distribution by convolution)."""
    p_after = p_before if p_after is None else p_after
    diff = np.convolve(_binomial_pmf(n, p_before), _binomial_pmf(n, p_after)[::-1])
    d = np.abs(np.arange(-n, n + 1))
    return float(diff[d >= math.ceil(p_gap * n - _EPS * n)].sum())
