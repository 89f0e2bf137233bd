"""Exact, index-based apportionment of global rows to sources.

Each stage turns its row weights into integer counts per period of D rows (largest remainder)
and interleaves them with smooth weighted round-robin, an integer-only, deterministic sequence in
which every prefix is within one row of the ideal count for every source. A row's source and
that source's row counter are O(1) functions of the global row index:

    stage k, local row j:  source = pattern_k[j % D]
                           source_row = base[k, source] + (j // D) * counts_k[source]
                                        + prefix_k[j % D, source]

so any host can compute any row without replaying the stream (Grain's `mix` instead truncates
weights to integers and counts elements, not tokens).
"""

from __future__ import annotations

import numpy as np

DEFAULT_PERIOD = 10_000


def apportion(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to `total`, proportional to weights (largest remainder, ties by index)."""
    weights = np.asarray(weights, np.float64)
    if total == 0 or weights.sum() == 0:
        return np.zeros(len(weights), np.int64)
    ideal = weights / weights.sum() * total
    counts = np.floor(ideal).astype(np.int64)
    remainder = ideal - counts
    order = np.lexsort((np.arange(len(weights)), -remainder))
    counts[order[:total - counts.sum()]] += 1
    return counts


def choose_period(weights: np.ndarray, max_period: int = DEFAULT_PERIOD) -> int:
    """The smallest D <= max_period making every weight * D an integer, else max_period."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    scaled = np.arange(1, max_period + 1)[:, None] * w[None, :]
    exact = np.all(np.abs(scaled - np.round(scaled)) < 1e-9, axis=1)
    return int(np.argmax(exact)) + 1 if exact.any() else max_period


def round_robin(counts: np.ndarray) -> np.ndarray:
    """Smooth weighted round-robin: a sequence of len(sum(counts)) with counts[i] entries i."""
    counts = np.asarray(counts, np.int64)
    period = int(counts.sum())
    current = np.zeros(len(counts), np.int64)
    pattern = np.empty(period, np.int32)
    for t in range(period):
        current += counts
        pick = int(np.argmax(current))  # ties go to the lowest index
        current[pick] -= period
        pattern[t] = pick
    return pattern


class _StagePattern:
    def __init__(self, row_weights: np.ndarray, max_period: int):
        period = choose_period(row_weights, max_period) if row_weights.sum() > 0 else 1
        self.counts = apportion(row_weights, period)
        self.pattern = round_robin(self.counts)
        onehot = np.zeros((period + 1, len(row_weights)), np.int64)
        onehot[np.arange(1, period + 1), self.pattern] = 1
        self.prefix = np.cumsum(onehot, axis=0)  # [D + 1, S]: counts in pattern[:t]
        self.period = period

    def counts_before(self, j: int) -> np.ndarray:
        """Rows per source among the stage's first j rows."""
        return (j // self.period) * self.counts + self.prefix[j % self.period]


class RowSchedule:
    """Maps global row indices to (source index, row index within that source's stream)."""

    def __init__(self, stage_rows: list[int], stage_row_weights: list[np.ndarray],
                 max_period: int = DEFAULT_PERIOD):
        if len(stage_rows) != len(stage_row_weights):
            raise ValueError("one row count per stage")
        self.num_sources = len(stage_row_weights[0])
        self.stage_starts = np.concatenate([[0], np.cumsum(stage_rows)]).astype(np.int64)
        self.stages = [_StagePattern(np.asarray(w, np.float64), max_period)
                       for w in stage_row_weights]
        base = [np.zeros(self.num_sources, np.int64)]
        for stage, rows in zip(self.stages, stage_rows):
            base.append(base[-1] + stage.counts_before(rows))
        self.base = np.stack(base)  # [num_stages + 1, S]

    @property
    def total_rows(self) -> int:
        return int(self.stage_starts[-1])

    def rows_per_source(self, upto: int | None = None) -> np.ndarray:
        """Rows each source contributes to global rows [0, upto) (default: all)."""
        upto = self.total_rows if upto is None else upto
        k = int(np.searchsorted(self.stage_starts, upto, side="right") - 1)
        if k >= len(self.stages):
            return self.base[-1].copy()
        return self.base[k] + self.stages[k].counts_before(upto - int(self.stage_starts[k]))

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.total_rows):
            raise IndexError(f"rows outside [0, {self.total_rows})")
        source = np.empty(rows.shape, np.int32)
        source_row = np.empty(rows.shape, np.int64)
        stage_of = np.searchsorted(self.stage_starts, rows, side="right") - 1
        for k in np.unique(stage_of):
            sel = stage_of == k
            st = self.stages[k]
            j = rows[sel] - self.stage_starts[k]
            phase = j % st.period
            src = st.pattern[phase]
            source[sel] = src
            source_row[sel] = (self.base[k, src] + (j // st.period) * st.counts[src]
                               + st.prefix[phase, src])
        return source, source_row
