"""Checkpoints: exact round trip of state + data state; every step sealed with checksums; a
corrupted (flipped bytes, truncated) newest step is reported in one line and skipped."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from phi4_jax.train import checkpoint, loop
from phi4_jax.train.workdir import WorkdirError
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


def test_every_step_is_sealed_with_checksums_of_its_files(tmp_path, states):
    ckpt = save_two(str(tmp_path), states)
    assert len(ckpt.seal_seconds) == 2  # one sealing per save, timed
    ckpt.close()
    for step in (1, 2):
        manifest = json.loads((tmp_path / str(step) / checkpoint.MANIFEST).read_text())
        files = manifest["files"]
        assert "data/process_0-of-1.json" in files and "meta/metadata" in files
        written = {os.path.relpath(os.path.join(root, f), tmp_path / str(step))
                   for root, _, names in os.walk(tmp_path / str(step) / "state") for f in names}
        assert written == {f for f in files if f.startswith("state/")}
        for name, entry in files.items():
            assert entry["size"] == os.path.getsize(tmp_path / str(step) / name)
        assert checkpoint.verify(tmp_path / str(step)) is None


def largest_data_file(step_dir):
    paths = [os.path.join(root, f) for root, _, names in os.walk(step_dir / "state")
             for f in names if "ocdbt.process_0" in root]
    return max(paths, key=os.path.getsize)


def flip_bytes(path, count=64):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        chunk = f.read(count)
        f.seek(-len(chunk), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in chunk))


@pytest.mark.parametrize("damage", ["flip_bytes", "truncate_arrays", "truncate_all"])
def test_corrupted_newest_falls_back_in_one_line(tmp_path, prog, states, caplog, damage):
    save_two(str(tmp_path), states).close()
    if damage == "flip_bytes":
        victim = largest_data_file(tmp_path / "2")
        flip_bytes(victim)
        expected = (f"{os.path.relpath(victim, tmp_path / '2')} does not match its checksum "
                    "(CRC-32 ")
    for root, _, files in os.walk(tmp_path / "2" / "state"):
        for name in files:
            path = os.path.join(root, name)
            arrays = damage == "truncate_arrays" and "ocdbt.process_0" in path
            if damage == "truncate_all" or arrays:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                expected = "were written (truncated)"
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
    caplog.clear()  # only what restoring logs counts: a slow save may warn before this point
    with caplog.at_level(logging.DEBUG):  # every logger: orbax's too
        state, data_state, step = ckpt.restore(prog.abstract_state, prog.state_shardings)
    assert step == 1 and data_state == {"index": 1}
    assert_same(state, states[0])
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(noisy) == 1 and not noisy[0].exc_info, caplog.text
    line = noisy[0].getMessage()
    assert line.startswith(f"checkpoint step 2 is corrupt ({tmp_path / '2'}): ")
    assert expected in line and line.endswith(f"restoring step 1 (step 2 kept as "
                                              f"{tmp_path / '2'}.corrupt)"), line
    assert ckpt.steps() == [1] and os.path.isdir(tmp_path / "2.corrupt")
    ckpt.save(2, states[1], {"index": 2}, {})  # the run can save step 2 again
    ckpt.close()


def test_an_unsealed_step_is_restored_unverified(tmp_path, prog, states):
    save_two(str(tmp_path), states).close()
    os.remove(tmp_path / "2" / checkpoint.MANIFEST)  # as saved before sealing existed
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
    state, _, step = ckpt.restore(prog.abstract_state, prog.state_shardings)
    assert step == 2
    assert_same(state, states[1])
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
    with pytest.raises(WorkdirError, match=r"no checkpoint in .* could be restored \(step 2: "
                       r"orbax could not restore it"):
        ckpt.restore(other, shardings)
    assert ckpt.steps() == [1, 2] and not os.path.exists(tmp_path / "2.corrupt")
    ckpt.close()
