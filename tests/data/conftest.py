"""Shared fixtures for the data engine tests: the embedded corpus and small random stores."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_mixtures.embedded import build_mixture
from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.store import write_store


@pytest.fixture(scope="session")
def embedded(tmp_path_factory) -> Mixture:
    """The embedded mixture (Table 5 over the embedded corpus), built once per session."""
    return build_mixture(str(tmp_path_factory.mktemp("embedded")))


def random_store(path: str, name: str, num_docs: int, max_len: int, seed: int,
                 with_mask: bool = False) -> None:
    """A store of random documents (lengths 1..max_len, tokens < 50_000) for exact checks."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 50_000, size=int(rng.integers(1, max_len + 1))).astype(np.uint32)
            for _ in range(num_docs)]
    masks = [rng.integers(0, 2, size=len(d)).astype(np.uint8) for d in docs] if with_mask else None
    write_store(path, name, docs, loss_masks=masks)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> str:
    """Stores a (40 docs up to 300 tokens), b (25 docs up to 90), c (12 docs up to 700, with a
    loss mask) and tiny (3 docs up to 10: smaller than one row)."""
    root = str(tmp_path_factory.mktemp("toy"))
    random_store(os.path.join(root, "a"), "a", 40, 300, seed=1)
    random_store(os.path.join(root, "b"), "b", 25, 90, seed=2)
    random_store(os.path.join(root, "c"), "c", 12, 700, seed=3, with_mask=True)
    random_store(os.path.join(root, "tiny"), "tiny", 3, 10, seed=4)
    return root


def toy_mixture(total_tokens: float = 60_000, packing_c: str = "best_fit",
                stages: tuple[Stage, ...] | None = None) -> Mixture:
    return Mixture(
        name="toy", total_tokens=total_tokens,
        sources=(Source("a", "a"), Source("b", "b"), Source("c", "c", packing=packing_c),
                 Source("tiny", "tiny")),
        stages=stages or (Stage({"a": 0.5, "b": 0.25, "c": 0.2, "tiny": 0.05}),))
