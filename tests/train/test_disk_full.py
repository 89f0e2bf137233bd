"""Disk full: a run on a small tmpfs stops with one error naming the step it could not save and
the last good checkpoint, which is intact and restores; no partial step is left."""

import os
import re
import subprocess

import jax
import pytest

from phi4_jax.train import checkpoint, loop
from phi4_jax.train.workdir import WorkdirError
from tests.train.conftest import tiny_config

ONE = jax.devices()[:1]


def mount_tmpfs(path, size):
    """A `size` tmpfs at `path`, or a skip saying why (mounting needs root; CI runs as root)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a {size} tmpfs at {path} (needs root): "
                    f"{done.stderr.strip()}")
    return path


@pytest.fixture
def small_disk(tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "8m")  # a trained test checkpoint takes 4.8 MiB
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_is_one_error_and_the_last_good_checkpoint_is_intact(small_disk):
    workdir = str(small_disk / "run")
    config = tiny_config(steps=8, checkpoint_every=1, keep=5)
    with pytest.raises(WorkdirError) as failed:
        loop.run(config, workdir, devices=ONE)
    message = str(failed.value)
    found = re.fullmatch(
        rf"{re.escape(workdir)}: no space left on device while saving step (\d+); the last good "
        rf"checkpoint is step (\d+) \({re.escape(workdir)}/checkpoints/\2, [\d.]+ MiB, intact\): "
        r"free space or lower train.keep, then rerun the same command to resume from it",
        message)
    assert found, message
    failed_step, good = int(found[1]), int(found[2])
    assert good == failed_step - 1 >= 1
    directory = os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(directory)) == [str(s) for s in range(1, good + 1)]  # no partial
    assert checkpoint.verify(os.path.join(directory, str(good))) is None
    prog = loop.build(config, devices=ONE)
    ckpts = checkpoint.Checkpointer(directory, keep=5)
    assert ckpts.restore(prog.abstract_state, prog.state_shardings)[2] == good
    ckpts.close()
    assert not os.path.exists(os.path.join(workdir, "lease.json"))
