"""Reference log-prob cache: computed once, reused, invalidated by the pair set or the reference;
the loop's two reference paths (cache in the batch, frozen tree via train.reference_from)."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest

from phi4_jax.train import checkpoint, loop
from phi4_jax.train.dpo import batches, reference
from tests.train.dpo.conftest import ONE, VOCAB, small_config, synthetic_pairs, write_pairs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A cached-reference program, its scorer and two checkpoints with different parameters."""
    root = tmp_path_factory.mktemp("ref")
    config = small_config()
    prog = loop.build(config, devices=ONE)
    scorer = reference.Scorer(prog, max_pairs_per_row=16)
    runs = []
    for seed in (0, 1):
        state = prog.init() if seed == 0 else _seeded_state(seed)
        workdir = str(root / f"run{seed}")
        ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=3,
                                       async_save=False)
        ckpt.save(1, state, {}, {})
        ckpt.close()
        runs.append(workdir)
    pairs_path = write_pairs(root / "pairs.jsonl", synthetic_pairs(9, completion_lengths=(1, 5)))
    return root, config, prog, scorer, runs, pairs_path


def _seeded_state(seed):
    config = small_config()
    config.train.seed = seed
    return loop.build(config, devices=ONE).init()


def load(path):
    return batches.load_pairs(path, vocab_size=VOCAB, seq_len=32)


def test_checkpoint_fingerprint_follows_content_not_location(setup, tmp_path):
    _, _, _, _, runs, _ = setup
    step = reference.resolve_checkpoint(runs[0])
    first = reference.checkpoint_fingerprint(step)
    assert reference.checkpoint_fingerprint(step) == first
    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy)
    assert reference.checkpoint_fingerprint(reference.resolve_checkpoint(str(copy))) == first
    assert reference.checkpoint_fingerprint(reference.resolve_checkpoint(runs[1])) != first
    with pytest.raises(FileNotFoundError, match="no step directory"):
        reference.resolve_checkpoint(str(tmp_path / "nothing"))


def test_relative_checkpoint_paths_work(setup, monkeypatch):
    """The experiments' chain defaults are relative workdirs (orbax needs absolute paths)."""
    _, _, prog, _, runs, _ = setup
    monkeypatch.chdir(os.path.dirname(runs[0]))
    name = os.path.basename(runs[0])
    assert str(reference.resolve_checkpoint(name)).startswith("/")
    checkpoint.restore_params(name, prog.abstract_state.params, prog.state_shardings.params)


def prepare(prog, scorer, pairs, workdir, *, source, cache_dir):
    """The cache hook the DPO objective's input builder calls."""
    return reference.prepare(prog, pairs, workdir, source=source, seed=0, cache_dir=cache_dir,
                             scorer=scorer)


def test_cache_is_computed_once_and_invalidated_by_pairs_or_reference(setup, tmp_path):
    _, _, prog, scorer, runs, pairs_path = setup
    cache_dir = str(tmp_path / "cache")
    pairs = load(pairs_path)
    start = reference.COUNTS["computed"]
    values = prepare(prog, scorer, pairs, str(tmp_path), source=runs[0], cache_dir=cache_dir)
    assert reference.COUNTS["computed"] == start + 1
    (entry,) = os.listdir(cache_dir)
    logps = os.path.join(cache_dir, entry, "logps.npy")
    mtime = os.stat(logps).st_mtime_ns
    with open(os.path.join(cache_dir, entry, "meta.json")) as f:
        meta = json.load(f)
    assert meta["pairs_fingerprint"] == pairs.fingerprint and meta["num_pairs"] == 9
    assert entry == f"{pairs.fingerprint[:16]}-{meta['reference_fingerprint'][:16]}"
    params = checkpoint.restore_params(runs[0], prog.abstract_state.params,
                                       prog.state_shardings.params)
    np.testing.assert_allclose(values, scorer.logps(params, pairs))
    # Second time: read, not recomputed, file untouched.
    again = prepare(prog, scorer, load(pairs_path), str(tmp_path), source=runs[0],
                    cache_dir=cache_dir)
    assert reference.COUNTS["computed"] == start + 1 and os.stat(logps).st_mtime_ns == mtime
    np.testing.assert_array_equal(again, values)
    # Another pair set: a new entry.
    other_pairs = load(write_pairs(tmp_path / "other.jsonl", synthetic_pairs(9, seed=7)))
    prepare(prog, scorer, other_pairs, str(tmp_path), source=runs[0], cache_dir=cache_dir)
    assert reference.COUNTS["computed"] == start + 2
    # Another reference checkpoint: a new entry with other values.
    changed = prepare(prog, scorer, pairs, str(tmp_path), source=runs[1], cache_dir=cache_dir)
    assert reference.COUNTS["computed"] == start + 3 and len(os.listdir(cache_dir)) == 3
    assert not np.allclose(changed, values)
    # A damaged entry is recomputed, not trusted.
    with open(os.path.join(cache_dir, entry, "meta.json"), "w") as f:
        f.write("{")
    prepare(prog, scorer, pairs, str(tmp_path), source=runs[0], cache_dir=cache_dir)
    assert reference.COUNTS["computed"] == start + 4


def test_the_loop_reuses_the_cache_and_starts_at_ln2(setup, tmp_path):
    """A first run's cache (written here by the same hook the loop calls) is read by the loop;
    the policy starts equal to the reference, so the first step's loss is ln 2."""
    _, config, prog, scorer, runs, pairs_path = setup
    config = config.copy_and_resolve_references()
    config.train.init_from = runs[0]
    config.train.steps = 1
    config.dpo.pairs = pairs_path
    config.dpo.cache_dir = str(tmp_path / "shared_cache")
    start = reference.COUNTS["computed"]
    prepare(prog, scorer, load(pairs_path), str(tmp_path / "first"), source=runs[0],
            cache_dir=config.dpo.cache_dir)
    result = loop.run(config, str(tmp_path / "second"), devices=ONE)
    assert reference.COUNTS["computed"] == start + 1  # the loop did not recompute
    assert result.start == "init_from"
    assert result.metrics["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(result.metrics["rewards/margins"]) < 1e-5
    with open(tmp_path / "second" / "pairs_report.json") as f:
        assert json.load(f)["kept"] == 9


def test_reference_from_fills_the_frozen_tree(setup, tmp_path):
    _, _, _, _, runs, pairs_path = setup
    config = small_config(reference_cache=False, pairs=pairs_path)
    config.train.reference_from = runs[1]  # policy: the seed-0 init; reference: run 1's params
    config.train.steps = 1
    result = loop.run(config, str(tmp_path), devices=ONE)
    assert result.start == "scratch" and result.metrics["loss"] != pytest.approx(math.log(2))
    prog = loop.build(config, devices=ONE)
    mine = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=1)
    state, _, _ = mine.restore(prog.abstract_state, prog.state_shardings)
    mine.close()
    expected = checkpoint.restore_params(runs[1], prog.abstract_state.params,
                                         prog.state_shardings.params)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.frozen["reference"]),
                 jax.device_get(expected))
