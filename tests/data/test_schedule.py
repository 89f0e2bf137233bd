"""Row apportionment: exact counts per period, low discrepancy, O(1) lookups."""

import numpy as np
import pytest

from phi4_jax.data.schedule import RowSchedule, apportion, choose_period, round_robin


def test_apportion_is_exact_and_proportional():
    counts = apportion(np.array([0.15, 0.15, 0.40, 0.20, 0.10]), 20)
    assert counts.tolist() == [3, 3, 8, 4, 2]
    counts = apportion(np.array([1.0, 1.0, 1.0]), 10)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1


def test_period_is_exact_for_table_5():
    assert choose_period(np.array([0.15, 0.15, 0.40, 0.20, 0.10])) == 20
    assert choose_period(np.array([1 / 3, 2 / 3])) == 3
    assert choose_period(np.array([np.pi, 1.0]), max_period=1000) == 1000


@pytest.mark.parametrize("counts", [[3, 3, 8, 4, 2], [1, 99], [5, 0, 7], [1, 1, 1, 1]])
def test_round_robin_counts_and_discrepancy(counts):
    pattern = round_robin(np.array(counts))
    assert np.bincount(pattern, minlength=len(counts)).tolist() == counts
    total = sum(counts)
    for i, c in enumerate(counts):
        running = np.cumsum(pattern == i)
        ideal = np.arange(1, total + 1) * c / total
        assert np.abs(running - ideal).max() < 1  # every prefix within one row of ideal


def test_lookup_matches_a_sequential_replay():
    weights = [np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.1, 0.8])]
    schedule = RowSchedule([1234, 777], weights, max_period=50)
    source, source_row = schedule.lookup(np.arange(schedule.total_rows))
    seen = np.zeros(3, np.int64)
    for s, r in zip(source, source_row):  # source rows count up from 0 without gaps
        assert r == seen[s]
        seen[s] += 1
    assert seen.tolist() == schedule.rows_per_source().tolist()
    shuffled = np.random.default_rng(0).permutation(schedule.total_rows)
    s2, r2 = schedule.lookup(shuffled)
    np.testing.assert_array_equal(s2, source[shuffled])
    np.testing.assert_array_equal(r2, source_row[shuffled])
    for upto in (0, 1, 1233, 1234, 1500, 2011):
        assert schedule.rows_per_source(upto).tolist() == np.bincount(
            source[:upto], minlength=3).tolist()
