"""Checkpoints: exact round trip of state + data state; a corrupted newest step is skipped."""

import logging
import os

import jax
import numpy as np
import pytest

from phi4_jax.train import checkpoint, loop
from tests.train.conftest import tiny_config


@pytest.fixture(scope="module")
def prog():
    return loop.build(tiny_config())  # fsdp over all 8 simulated devices: sharded save/restore


@pytest.fixture(scope="module")
def states(prog):
    first = prog.init()
    second = first._replace(step=first.step + 1,
                            params=jax.tree.map(lambda x: x * 2, first.params))
    return first, second


def assert_same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def save_two(directory, states):
    ckpt = checkpoint.Checkpointer(directory, keep=3)
    ckpt.save(1, states[0], {"index": 1}, {"config": {}})
    ckpt.save(2, states[1], {"index": 2}, {"config": {}})
    ckpt.wait()
    return ckpt


def test_round_trip_is_exact_and_keeps_shardings(tmp_path, prog, states):
    ckpt = save_two(str(tmp_path), states)
    assert ckpt.steps() == [1, 2]
    assert {"data", "meta", "state"} <= set(os.listdir(tmp_path / "2"))
    assert "process_0-of-1.json" in os.listdir(tmp_path / "2" / "data")
    state, data_state, step = ckpt.restore(prog.abstract_state, prog.state_shardings)
    assert step == 2 and data_state == {"index": 2}
    assert_same(state, states[1])
    assert state.params["lm_head"].sharding == prog.state_shardings.params["lm_head"]
    ckpt.close()


def test_keeps_the_newest_n(tmp_path, states):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, states[0], {"index": step}, {})
    ckpt.close()
    assert checkpoint.Checkpointer(str(tmp_path), keep=2).steps() == [2, 3]


@pytest.mark.parametrize("damage", ["truncate_arrays", "truncate_all"])
def test_corrupted_newest_falls_back_with_a_warning(tmp_path, prog, states, caplog, damage):
    save_two(str(tmp_path), states).close()
    for root, _, files in os.walk(tmp_path / "2" / "state"):
        for name in files:
            path = os.path.join(root, name)
            if damage == "truncate_all" or "ocdbt.process_0" in path:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
    with caplog.at_level(logging.WARNING, logger="phi4_jax.train.checkpoint"):
        state, data_state, step = ckpt.restore(prog.abstract_state, prog.state_shardings)
    assert step == 1 and data_state == {"index": 1}
    assert_same(state, states[0])
    assert f"checkpoint {tmp_path / '2'} could not be restored" in caplog.text
    assert ckpt.steps() == [1] and os.path.isdir(tmp_path / "2.corrupt")
    ckpt.save(2, states[1], {"index": 2}, {})  # the run can save step 2 again
    ckpt.close()


def test_restore_params_only_for_init_from(tmp_path, prog, states):
    save_two(str(tmp_path / "checkpoints"), states).close()
    params = checkpoint.restore_params(str(tmp_path), prog.abstract_state.params,
                                       prog.state_shardings.params)
    assert_same(params, states[1].params)
    with pytest.raises(FileNotFoundError, match="train.init_from="):
        checkpoint.restore_params(str(tmp_path / "nothing"), prog.abstract_state.params,
                                  prog.state_shardings.params)


def test_empty_directory_restores_nothing(tmp_path, prog):
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=1)
    assert ckpt.restore(prog.abstract_state, prog.state_shardings) is None
    ckpt.close()


def test_nothing_restorable_is_an_error_and_moves_nothing(tmp_path, prog, states):
    save_two(str(tmp_path), states).close()
    # A state with one more parameter than was saved: as if the model changed.
    other = prog.abstract_state._replace(
        params={**prog.abstract_state.params, "extra": prog.abstract_state.params["lm_head"]})
    shardings = prog.state_shardings._replace(
        params={**prog.state_shardings.params, "extra": prog.state_shardings.params["lm_head"]})
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
    with pytest.raises(RuntimeError, match="no checkpoint in .* could be restored"):
        ckpt.restore(other, shardings)
    assert ckpt.steps() == [1, 2] and not os.path.exists(tmp_path / "2.corrupt")
    ckpt.close()
