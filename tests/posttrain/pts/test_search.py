"""Pivotal Token Search on synthetic problems with known p(success | prefix)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phi4_jax.posttrain.pts.search import (
    Estimate,
    Estimator,
    PTSConfig,
    Stats,
    false_pivot_probability,
    pivot_pairs,
    search_batch,
    search_solutions,
    split_point,
)
from phi4_jax.posttrain.records import parse_pair, parse_pivot
from tests.posttrain.synthetic import (
    HEADS,
    LOSE,
    TAILS,
    WIN,
    CoinSampler,
    Curve,
    CurveSampler,
    MarkerOracle,
    coin_problems,
    random_curve,
    true_coin_pivots,
)

N = 20
GAP = 0.2


# -- an independent reference: the paper's recursive, depth-first Subdivide -------------------
def reference_split(logprobs, a, b, rule):
    mid = a + (b - a) // 2
    if rule == "token":
        return mid
    weights = [-x for x in logprobs[a:b]]
    half = sum(weights) / 2
    best, best_key, acc = None, None, 0.0
    for m in range(a + 1, b):
        acc += weights[m - 1 - a]
        key = (abs(acc - half), abs(m - mid))
        if best_key is None or key < best_key:
            best, best_key = m, key
    return best


def reference_pts(curve: Curve, gap: float, rule: str, depths: list | None = None):
    """Returns (pivot positions, set of prefix lengths whose p was looked up); appends the
    recursion depth of every split to `depths`."""
    looked = set()
    depths = [] if depths is None else depths

    def p(i):
        looked.add(i)
        return curve.p[i]

    def subdivide(a, b, depth):
        if b - a <= 1 or abs(p(a) - p(b)) < gap - 1e-9:
            return [(a, b)]
        depths.append(depth)
        m = reference_split(curve.logprobs, a, b, rule)
        return subdivide(a, m, depth + 1) + subdivide(m, b, depth + 1)

    segments = subdivide(0, len(curve.tokens), 0)
    pivots = [a for a, b in segments if b - a == 1 and abs(p(a) - p(b)) >= gap - 1e-9]
    return pivots, looked


def run_curves(curves, rule, n=N, gap=GAP):
    sampler, oracle, stats = CurveSampler(curves), MarkerOracle(), Stats()
    est = Estimator(sampler, oracle, n, stats)
    config = PTSConfig(n_samples=n, p_gap=gap, split=rule)
    searches = search_solutions(est, [(c.problem(), c.rollout(), 0) for c in curves], config)
    return searches, est, stats, oracle, sampler


# -- false pivots ------------------------------------------------------------------------------
def test_false_pivot_probability_matches_the_recipe_figures():
    assert false_pivot_probability(10, 0.2) == pytest.approx(0.50, abs=0.01)
    assert false_pivot_probability(50, 0.2) == pytest.approx(0.06, abs=0.005)
    assert false_pivot_probability(100, 0.2) == pytest.approx(0.006, abs=0.0005)


def test_false_pivot_probability_equals_brute_force_enumeration():
    for n, gap, p0, p1 in [(3, 0.3, 0.5, 0.5), (4, 0.5, 0.3, 0.6), (5, 0.2, 0.9, 0.1)]:
        total = 0.0
        for xs in itertools.product([0, 1], repeat=n):
            for ys in itertools.product([0, 1], repeat=n):
                prob = math.prod(p0 if x else 1 - p0 for x in xs) * math.prod(
                    p1 if y else 1 - p1 for y in ys)
                if abs(sum(xs) - sum(ys)) / n >= gap - 1e-12:
                    total += prob
        assert false_pivot_probability(n, gap, p0, p1) == pytest.approx(total, rel=1e-12)


def test_false_pivot_probability_agrees_with_monte_carlo():
    rng = np.random.default_rng(0)
    draws = 400_000
    x, y = rng.binomial(16, 0.4, draws), rng.binomial(16, 0.55, draws)
    empirical = np.mean(np.abs(x - y) / 16 >= 0.2 - 1e-9)
    exact = false_pivot_probability(16, 0.2, 0.4, 0.55)
    assert abs(empirical - exact) < 4 * math.sqrt(exact * (1 - exact) / draws)


# -- split rule --------------------------------------------------------------------------------
def test_logprob_split_isolates_a_heavy_token():
    lps = [-0.01] * 10 + [-5.0] + [-0.01] * 20
    m = split_point(lps, 0, 31, "logprob")
    assert m == 11  # left part ends with the heavy token
    assert split_point(lps, 0, 11, "logprob") == 10  # then it is split off on its own
    assert split_point(lps, 0, 31, "token") == 15
    assert split_point([0.0] * 9, 0, 9, "logprob") == 4  # no information: token midpoint


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-20, 0), min_size=2, max_size=40), st.data())
def test_split_point_matches_reference_and_stays_inside(lps, data):
    a = data.draw(st.integers(0, len(lps) - 2))
    b = data.draw(st.integers(a + 2, len(lps)))
    for rule in ("logprob", "token"):
        m = split_point(lps, a, b, rule)
        assert a < m < b
        ref = reference_split(lps, a, b, rule)
        w = np.cumsum([-x for x in lps[a:b]])
        # equal up to float ties between two candidates
        assert m == ref or math.isclose(abs(w[m - a - 1] - w[-1] / 2),
                                        abs(w[ref - a - 1] - w[-1] / 2), abs_tol=1e-9)


# -- exact pivots on known curves ----------------------------------------------------------------
def test_finds_exactly_the_known_pivots_and_matches_the_recursive_reference():
    rng = np.random.default_rng(1)
    curves = [random_curve(rng, i, N, GAP) for i in range(40)]
    for rule in ("logprob", "token"):
        searches, est, stats, oracle, _ = run_curves(curves, rule)
        evaluated = 0
        for curve, s in zip(curves, searches):
            found = [pos for pos, _, _ in s.pivots]
            assert found == curve.pivots(GAP), (rule, curve)
            ref_pivots, looked = reference_pts(curve, GAP, rule)
            assert found == ref_pivots
            for pos, p0, p1 in s.pivots:
                assert (p0, p1) == pytest.approx((curve.p[pos], curve.p[pos + 1]))
            evaluated += len(looked - {len(curve.tokens)})  # the full solution is not sampled
        assert stats.prefix_evals == evaluated
        # every completion checked is counted, once: N per sampled prefix + 1 per full solution
        assert stats.oracle_calls == oracle.calls == N * evaluated + len(curves)


def _calls(curves, rule):
    return np.array([run_curves([c], rule)[2].oracle_calls for c in curves])


def test_logprob_split_needs_no_more_oracle_calls_than_token_split():
    # pivots on low-probability tokens, no sub-gap drift: never more calls, problem by problem
    rng = np.random.default_rng(2)
    clean = [random_curve(rng, i, N, GAP, max_small=0) for i in range(60)]
    logprob, token = _calls(clean, "logprob"), _calls(clean, "token")
    assert (logprob <= token).all(), np.flatnonzero(logprob > token)
    assert logprob.sum() < 0.7 * token.sum()
    # with small sub-gap steps that add up, a few problems cost one split more; the total less
    drift = [random_curve(rng, 100 + i, N, GAP, max_small=5) for i in range(60)]
    logprob, token = _calls(drift, "logprob"), _calls(drift, "token")
    assert logprob.sum() < 0.8 * token.sum()
    assert (logprob <= token).mean() >= 0.9


def test_non_monotone_success_hides_pivots_like_the_paper_says():
    # 0.5 -> 0.9 at token 3, back to 0.5 at token 6, then 1.0 at the last token (9)
    p = (0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 1.0)
    curve = Curve((1000,), (11, 12, 13, 14, 15, 16, 17, 18, 19, WIN), (-0.5,) * 10, p)
    assert curve.pivots(GAP) == [3, 6, 9]
    searches, *_ = run_curves([curve], "token")
    found = [pos for pos, _, _ in searches[0].pivots]
    assert found == reference_pts(curve, GAP, "token")[0] == [3]


def test_all_searches_of_a_depth_share_one_sampler_call():
    rng = np.random.default_rng(3)
    curves = [random_curve(rng, i, N, GAP) for i in range(8)]
    _, _, stats, _, sampler = run_curves(curves, "logprob")
    depths = []
    for c in curves:
        reference_pts(c, GAP, "logprob", depths)
    assert sampler.calls[0] == len(curves)  # every root in one call
    assert sum(sampler.calls) == stats.prefix_evals
    # then one call per recursion depth (depth-first would make one per split: len(depths))
    assert len(sampler.calls) == 1 + max(depths) + 1 < len(depths)


# -- pairs --------------------------------------------------------------------------------------
def test_pivot_pairs_take_an_alternative_from_the_other_side():
    est = Estimate(0.5, 10, [], [], {7: [3, 3], 8: [0, 4], 9: [1, 2], 10: [2, 5]})
    # token 7 raises p (0.5 -> 0.9): rejected alternatives have empirical p < 0.5: 8 (0.0), 10
    assert pivot_pairs(est, 7, 0.5, 0.9, 2) == [(7, 8, 0.0, 4), (7, 10, 0.4, 5)]
    # token 8 lowers p: chosen alternatives have empirical p > 0.5: only 7 (9 sits at 0.5)
    assert pivot_pairs(est, 8, 0.5, 0.1, 5) == [(7, 8, 1.0, 3)]
    assert pivot_pairs(Estimate(0.5, 2, [], [], {8: [0, 2]}), 8, 0.5, 0.0, 1) == []


def test_coin_search_end_to_end_records():
    sampler, oracle = CoinSampler(length=12, q=0.1), MarkerOracle()
    config = PTSConfig(n_samples=64, p_gap=0.3, solutions_per_question=2)
    problems = coin_problems(6)
    results = search_batch(problems, sampler, oracle, config)
    assert all(r.searched and len(r.solutions) == 2 for r in results)  # p(Q) = 0.5
    assert all({s["correct"] for s in r.solutions} == {True, False} for r in results)
    n_pairs = 0
    for problem, r in zip(problems, results):
        for pivot in r.pivots:
            assert parse_pivot(pivot.to_json()) == pivot
            assert pivot.prefix_ids[:2] == problem.prompt_ids
            assert pivot.token_id in (WIN, LOSE, HEADS, TAILS)
            assert pivot.p_before == pytest.approx(0.5, abs=0.2)
            assert pivot.p_after == (1.0 if pivot.token_id in (WIN, HEADS) else 0.0)
        # each solution holds exactly one true pivot, its deciding token; no false pivots
        assert [s["pivots"] for s in r.solutions] == [1, 1]
        for pivot in r.pivots:
            reply = pivot.prefix_ids[2:] + (pivot.token_id,)
            assert true_coin_pivots(reply) == [pivot.position]
        for pair in r.pairs:
            assert parse_pair(pair.to_json()) == pair
            pivot = next(p for p in r.pivots if p.id == pair.meta["pivot_id"])
            assert pair.prompt_ids == pivot.prefix_ids
            expected = {(WIN, LOSE), (HEADS, TAILS)}
            assert (pair.chosen_ids + pair.rejected_ids) in expected
            n_pairs += 1
    assert n_pairs >= 6
    again = search_batch(problems, CoinSampler(length=12, q=0.1), MarkerOracle(), config)
    assert [r.pairs for r in again] == [r.pairs for r in results]  # deterministic per prefix


def test_questions_outside_the_p_window_are_not_searched():
    curve = Curve((1000,), (11, 12, WIN), (-1.0, -1.0, -1.0), (0.9, 0.9, 0.95, 1.0))
    results = search_batch([curve.problem()], CurveSampler([curve]), MarkerOracle(),
                           PTSConfig(n_samples=N))
    assert results[0].p == pytest.approx(0.9) and not results[0].searched
    assert results[0].pivots == [] and results[0].solutions == []


def test_a_question_its_oracle_rejects_is_reported_not_fatal():
    class PickyOracle(MarkerOracle):
        def check(self, question, completions):
            if question.id == "coin1":
                raise ValueError("cannot parse the gold answer")
            return super().check(question, completions)

    results = search_batch(coin_problems(3), CoinSampler(), PickyOracle(),
                           PTSConfig(n_samples=64, solutions_per_question=1))
    assert [r.error for r in results] == [None, "ValueError: cannot parse the gold answer", None]
    assert [r.searched for r in results] == [True, False, True]
    assert results[1].pivots == [] and results[0].solutions
