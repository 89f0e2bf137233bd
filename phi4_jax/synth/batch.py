"""Bounded-concurrency batch runner for sandbox runs (oracles evaluate hundreds of programs)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from phi4_jax.synth.sandbox import SandboxConfig, SandboxResult, run_python

T = TypeVar("T")
R = TypeVar("R")


def run_many(codes: Sequence[str], *, config: SandboxConfig | None = None,
             max_workers: int | None = None,
             progress: bool | Callable[[int, int], None] = False) -> list[SandboxResult]:
    """``run_python`` over many programs with a bounded pool; results in input order."""
    return map_bounded(lambda c: run_python(c, config=config), codes,
                       max_workers=max_workers, progress=progress)


def map_bounded(fn: Callable[[T], R], items: Iterable[T], *, max_workers: int | None = None,
                progress: bool | Callable[[int, int], None] = False) -> list[R]:
    """Apply ``fn`` with at most ``max_workers`` concurrent calls (threads: each call waits on
    its own sandbox process).  ``progress`` is ``callback(done, total)`` or True for stderr."""
    items = list(items)
    workers = max_workers or max(1, min(8, os.cpu_count() or 1))
    report = _stderr_progress if progress is True else (progress or None)
    results: list[Any] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for done, fut in enumerate(as_completed(futures), 1):
            results[futures[fut]] = fut.result()
            if report:
                report(done, len(items))
    return results


def _stderr_progress(done: int, total: int) -> None:
    if done == total or done % max(1, total // 20) == 0:
        print(f"sandbox: {done}/{total}", file=sys.stderr, flush=True)
