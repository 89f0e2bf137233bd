"""Mixtures as seqio Mixtures over token stores: records, rates and sampled proportions.

Tolerance of the proportion test. seqio mixes with tf.data's sample_from_datasets: each
sampled example picks its Task independently with probabilities rate / sum(rates), so the count
of source i in N examples is Binomial(N, p_i). The test accepts |count_i / N - p_i| <=
4 sqrt(p_i (1 - p_i) / N) (four standard deviations: a correct sampler fails it with probability
below 6.4e-5 per source, whatever the seed; with N = 4000 that is at most +-0.032). The token
shares then lie in the interval that these example bounds imply (checked too), around the
configured token fractions.
"""

from __future__ import annotations

import collections
import math
import os

import numpy as np
import pytest

from phi4_jax.data.mixture import Mixture, Source, Stage
from phi4_jax.data.store import open_store, write_store
from phi4_jax.seqio import mixture_rates, register_mixture, register_store_task

N = 4000
SIGMAS = 4.0
LENGTHS = {"a": 3, "b": 6, "c": 12}  # every document of source s has LENGTHS[s] tokens
BASE = {"a": 0, "b": 10_000, "c": 20_000}  # source s's token ids lie in [BASE, BASE + 10_000)
FRACTIONS = {"a": 0.5, "b": 0.3, "c": 0.2}


def tolerance(p: float, n: int = N) -> float:
    return SIGMAS * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("seqio_stores"))
    rng = np.random.default_rng(0)
    for name, length in LENGTHS.items():
        docs = [BASE[name] + rng.integers(0, 10_000, size=length) for _ in range(50)]
        write_store(os.path.join(root, name), name, docs)
    return root


def three_sources(root: str) -> Mixture:
    return Mixture(name="three", total_tokens=1e6,
                   sources=tuple(Source(s, os.path.join(root, s)) for s in LENGTHS),
                   stages=(Stage(dict(FRACTIONS), fraction=0.5),
                           Stage({"a": 0.2, "b": 0.2, "c": 0.6}, fraction=0.5)))


def sample_counts(mixture, n: int = N, seed: int = 0) -> collections.Counter:
    ds = mixture.get_dataset(None, split="train", seed=seed, log_mixing_proportions=False)
    counts = collections.Counter()
    for example in ds.take(n).as_numpy_iterator():
        ids = example["targets"]
        source = next(s for s in BASE if BASE[s] <= ids[0] < BASE[s] + 10_000)
        assert len(ids) == LENGTHS[source]
        counts[source] += 1
    return counts


def test_task_records_equal_the_store_records(seqio, stores, tmp_path):
    path, heldout = os.path.join(stores, "b"), str(tmp_path / "b_heldout")
    write_store(heldout, "b", [np.array([7, 8, 9]), np.array([1])])
    task = register_store_task("test.store_b", path, heldout=heldout)
    assert seqio.TaskRegistry.get("test.store_b") is task
    assert set(task.splits) == {"train", "validation"}
    store = open_store(path)
    got = list(task.get_dataset(None, split="train", shuffle=False,
                                num_epochs=1).as_numpy_iterator())
    assert len(got) == store.num_documents
    for d, example in enumerate(got):
        assert set(example) == {"targets"} and example["targets"].dtype == np.int32
        np.testing.assert_array_equal(example["targets"], store.document(d))
    shuffled = task.source.get_dataset("train", shuffle=True, seed=3)
    again = task.source.get_dataset("train", shuffle=True, seed=3)
    order = [tuple(x["targets"]) for x in shuffled.as_numpy_iterator()]
    assert order == [tuple(x["targets"]) for x in again.as_numpy_iterator()]
    assert sorted(order) == sorted(tuple(x["targets"]) for x in got) and order != \
        [tuple(x["targets"]) for x in got]
    held = [x["targets"].tolist() for x in task.get_dataset(
        None, split="validation", shuffle=False, num_epochs=1).as_numpy_iterator()]
    assert held == [[7, 8, 9], [1]]
    assert register_store_task("test.store_b", path) is seqio.TaskRegistry.get("test.store_b")


@pytest.mark.parametrize("rates", ["tokens", "examples"])
def test_sampled_proportions_match_the_rates(seqio, stores, rates):
    mixture = three_sources(stores)
    mix = register_mixture(mixture, stage=0, rates=rates)
    assert mix.name == "phi4.three.stage0"
    assert sorted(t.name for t in mix.tasks) == [f"phi4.three.stage0.{s}" for s in "abc"]
    expected = mixture_rates(mixture, {s: float(n) for s, n in LENGTHS.items()}, stage=0,
                             rates=rates)
    if rates == "examples":
        assert expected == pytest.approx(FRACTIONS)
    else:  # rates proportional to fraction / document length
        raw = {s: FRACTIONS[s] / LENGTHS[s] for s in LENGTHS}
        assert expected == pytest.approx({s: r / sum(raw.values()) for s, r in raw.items()})
    assert sum(expected.values()) == pytest.approx(1.0)
    counts = sample_counts(mix)
    assert sum(counts.values()) == N
    for s, p in expected.items():
        assert abs(counts[s] / N - p) <= tolerance(p), (s, counts[s] / N, p, tolerance(p))
    # Token shares: inside the interval the example bounds imply (and near the fractions when
    # rates="tokens").
    tokens = {s: counts[s] * LENGTHS[s] for s in LENGTHS}
    for s in LENGTHS:
        share = tokens[s] / sum(tokens.values())
        lo_i = (expected[s] - tolerance(expected[s])) * LENGTHS[s]
        hi_i = (expected[s] + tolerance(expected[s])) * LENGTHS[s]
        rest_lo = sum((expected[t] - tolerance(expected[t])) * LENGTHS[t] for t in LENGTHS
                      if t != s)
        rest_hi = sum((expected[t] + tolerance(expected[t])) * LENGTHS[t] for t in LENGTHS
                      if t != s)
        assert lo_i / (lo_i + rest_hi) <= share <= hi_i / (hi_i + rest_lo)
        if rates == "tokens":
            assert lo_i / (lo_i + rest_hi) <= FRACTIONS[s] <= hi_i / (hi_i + rest_lo)


def test_whole_budget_rates_and_zero_weight_sources(seqio, stores):
    mixture = three_sources(stores)
    lengths = {s: float(n) for s, n in LENGTHS.items()}
    whole = mixture_rates(mixture, lengths, rates="examples")
    assert whole == pytest.approx({"a": 0.35, "b": 0.25, "c": 0.4})  # 0.5 x each stage
    assert mixture_rates(mixture, lengths, rates="examples", stage=1) == \
        pytest.approx({"a": 0.2, "b": 0.2, "c": 0.6})
    no_c = mixture.replace(stages=(Stage({"a": 0.5, "b": 0.5}),))
    mix = register_mixture(no_c, name="test.no_c")
    assert sorted(mix.rate_per_task_name) == ["test.no_c.a", "test.no_c.b"]
    assert "test.no_c.c" in seqio.TaskRegistry.names()  # registered, not mixed
    with pytest.raises(ValueError, match="rates must be"):
        mixture_rates(mixture, lengths, rates="documents")
    with pytest.raises(ValueError, match="no stage 2"):
        mixture_rates(mixture, lengths, stage=2)


def test_the_repository_mixtures_register(seqio, tmp_path):
    import data_mixtures  # noqa: F401  (registers the file names)

    mix = register_mixture("embedded", cache_dir=str(tmp_path))
    from data_mixtures.embedded import build_mixture

    mixture = build_mixture(str(tmp_path))
    assert mix.name == f"phi4.{mixture.name}"
    assert {t.name for t in mix.tasks} == {f"phi4.{mixture.name}.{s}"
                                           for s in mixture.source_names}
    total = mix.total_rate
    lengths = {}
    for s in mixture.sources:
        store = open_store(s.path)
        lengths[s.name] = store.num_tokens / store.num_documents
    for s, p in mixture_rates(mixture, lengths).items():
        assert mix.get_rate(seqio.TaskRegistry.get(f"phi4.{mixture.name}.{s}")) / total == \
            pytest.approx(p)
    first = next(mix.get_dataset(None, split="train", seed=0,
                                 log_mixing_proportions=False).as_numpy_iterator())
    assert first["targets"].dtype == np.int32 and first["targets"].size > 0
