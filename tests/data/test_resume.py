"""Exact resume: bit-identical next batches in a fresh process, any host count (also through the
training checkpoint's data-state handler), and clear errors when the data or the plan changed."""

import json
import os
import shutil
import subprocess
import sys

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from phi4_jax.data import pipeline
from phi4_jax.train import checkpoint
from tests.data.conftest import random_store, toy_mixture

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _iterator(root, hosts=1, index=0, **kw):
    return pipeline.build_iterator(toy_mixture(), seq_len=64, global_batch_size=8,
                                   data_root=root, process_index=index, process_count=hosts, **kw)


def _save(it, ckpt_dir, step):
    manager = ocp.CheckpointManager(ckpt_dir, item_names=("data",))
    manager.save(step, args=ocp.args.Composite(data=ocp.args.JsonSave(it.get_state())))
    manager.wait_until_finished()
    manager.close()


@pytest.mark.parametrize("hosts", [1, 2])
def test_fresh_process_restore_is_bit_identical(toy_root, tmp_path, hosts):
    it = _iterator(toy_root)
    for _ in range(7):
        next(it)
    assert it.step == 7
    _save(it, str(tmp_path / "ckpt"), 7)
    expected = [next(it) for _ in range(5)]
    out = tmp_path / "restored.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-m", "tests.data.resume_worker", str(tmp_path / "ckpt"),
                    toy_root, str(out), "5", str(hosts)], cwd=REPO, env=env, check=True,
                   timeout=300)
    restored = np.load(out)
    for i, batch in enumerate(expected):
        for key, value in batch.items():
            got = restored[f"{i}/{key}"]
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got, value)


def test_state_is_json_and_host_count_independent(toy_root):
    one = _iterator(toy_root)
    for _ in range(3):
        next(one)
    state = one.get_state()
    assert state["step"] == 3 and state["grain"] == {"next_index": 3}
    halves = [_iterator(toy_root, hosts=2, index=h) for h in range(2)]
    for half in halves:
        half.set_state(state)
        assert half.get_state() == state
    np.testing.assert_array_equal(next(one)["tokens"],
                                  np.concatenate([next(h)["tokens"] for h in halves]))


def test_changed_store_fails_with_the_source_name(toy_root, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(toy_root, root)
    it = _iterator(root)
    next(it)
    state = it.get_state()
    random_store(os.path.join(root, "b"), "b", 25, 90, seed=99)  # same shape, new content
    with pytest.raises(pipeline.DataStateError, match=r"source 'b': the token store at .*/b has "
                                                      r"fingerprint .* the data changed"):
        _iterator(root).set_state(state)


def test_changed_plan_fails_naming_the_field(toy_root):
    it = _iterator(toy_root)
    state = it.get_state()
    with pytest.raises(pipeline.DataStateError, match=r"seed: checkpoint 0 != now 1"):
        _iterator(toy_root, seed=1).set_state(state)
    with pytest.raises(pipeline.DataStateError, match="global_batch_size"):
        pipeline.build_iterator(toy_mixture(), seq_len=64, global_batch_size=16,
                                data_root=toy_root, process_index=0,
                                process_count=1).set_state(state)


def test_grain_checkpoint_handler_round_trip(toy_root, tmp_path):
    it = _iterator(toy_root)
    for _ in range(4):
        next(it)
    manager = ocp.CheckpointManager(str(tmp_path / "g"), item_names=("data",))
    manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = next(it)
    fresh = _iterator(toy_root)
    manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    np.testing.assert_array_equal(next(fresh)["tokens"], expected["tokens"])


def _write_host_states(directory, states):
    directory.mkdir(parents=True)
    for i, state in enumerate(states):
        (directory / f"process_{i}-of-{len(states)}.json").write_text(json.dumps(state))


def test_checkpoint_restores_a_two_host_data_state_on_one_host(toy_root, tmp_path):
    halves = [_iterator(toy_root, hosts=2, index=h) for h in range(2)]
    for half in halves:
        for _ in range(3):
            next(half)
    states = [h.get_state() for h in halves]
    assert states[0] == states[1]  # the same state on every host: no host index in it
    expected = np.concatenate([next(h)["tokens"] for h in halves])
    _write_host_states(tmp_path / "data", states)
    restored = checkpoint.DataStateHandler().restore(epath.Path(tmp_path / "data"))
    one = _iterator(toy_root)  # this test process: process 0 of 1
    one.set_state(restored)
    np.testing.assert_array_equal(next(one)["tokens"], expected)


def test_checkpoint_refuses_per_host_states_naming_the_process_count(tmp_path):
    _write_host_states(tmp_path / "data", [{"host": 0}, {"host": 1}])
    with pytest.raises(checkpoint.HostCountError, match="resume with exactly 2 processes"):
        checkpoint.DataStateHandler().restore(epath.Path(tmp_path / "data"))
    (tmp_path / "data" / "process_1-of-2.json").unlink()
    with pytest.raises(FileNotFoundError, match="no complete data state"):
        checkpoint.DataStateHandler().restore(epath.Path(tmp_path / "data"))


def test_host_count_refusal_is_not_a_corrupt_step(tmp_path):
    manager = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",))
    manager.save(1, args=ocp.args.Composite(data=checkpoint.DataStateSave({"host": 0})))
    manager.wait_until_finished()
    data = tmp_path / "ckpt" / "1" / "data"
    (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
    (data / "process_1-of-2.json").write_text(json.dumps({"host": 1}))
    with pytest.raises(checkpoint.HostCountError, match="exactly 2 processes"):
        manager.restore(1, args=ocp.args.Composite(data=checkpoint.DataStateRestore()))
    manager.close()
