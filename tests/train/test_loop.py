"""The loop end to end on one device: trains, checkpoints, logs, resumes, reports a finished
run, init_from, NaN abort."""

import glob
import json
import os

import jax
import numpy as np
import pytest

from phi4_jax.train import checkpoint, loop
from tests.train.conftest import tiny_config

ONE = jax.devices()[:1]


def records(workdir):
    """Last metrics record per step (a resumed run appends the steps it redoes)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            out[rec["step"]] = rec
    return out


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    result = loop.run(tiny_config(steps=6), workdir, devices=ONE)
    return workdir, result


def test_trains_checkpoints_and_logs(first_run, capsys):
    workdir, result = first_run
    assert result.start == "scratch" and result.step == 6 and not result.preempted
    assert checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=3).steps() == [3, 6]
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["name"] == "tiny_pretrain"
    recs = records(workdir)
    assert sorted(recs) == [1, 2, 3, 4, 5, 6]
    losses = [recs[s]["loss"] for s in sorted(recs)]
    assert losses[-1] < losses[0] - 0.05, losses
    assert {"grad_norm", "learning_rate", "step_time_s", "tokens_per_s", "mfu"} <= set(recs[6])


def test_same_workdir_resumes(first_run, capsys):
    workdir, _ = first_run
    result = loop.run(tiny_config(steps=8), workdir, devices=ONE)
    assert result.start == "checkpoint" and result.step == 8
    assert sorted(records(workdir)) == list(range(1, 9))
    out = capsys.readouterr().out
    assert "start from checkpoint at step 6" in out
    assert "step 8/8" in out and "tok/s" in out and "ETA" in out


def test_a_finished_run_reports_itself_and_trains_nothing(first_run, capsys):
    workdir, _ = first_run
    done = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=3).steps()[-1]
    before = records(workdir)
    capsys.readouterr()
    result = loop.run(tiny_config(steps=done), workdir, devices=ONE)
    out = capsys.readouterr().out
    assert result.step == done and result.start == "checkpoint" and not result.preempted
    assert f"run complete at step {done}/{done}" in out and "compiled" not in out
    assert f"last logged metrics (step {done}): loss {before[done]['loss']:.4f} | lr" in out
    assert result.metrics == {k: v for k, v in before[done].items() if k != "step"}
    assert records(workdir) == before  # nothing appended


def test_init_from_takes_only_the_parameters(first_run, tmp_path):
    source, _ = first_run
    config = tiny_config(steps=2, checkpoint_every=2, init_from=source)
    config.optimizer.peak_lr = 0.0  # no update: the saved params must be the source's
    result = loop.run(config, str(tmp_path), devices=ONE)
    assert result.start == "init_from"
    prog = loop.build(config, devices=ONE)
    mine = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=1)
    state, _, step = mine.restore(prog.abstract_state, prog.state_shardings)
    source_params = checkpoint.restore_params(source, prog.abstract_state.params,
                                              prog.state_shardings.params)
    assert step == 2 and int(state.step) == 2
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params),
                 jax.device_get(source_params))
    mine.close()


def test_nonfinite_losses_abort_after_k_in_a_row(tmp_path):
    config = tiny_config(steps=6, z_loss=float("nan"), max_nonfinite_in_row=2)
    with pytest.raises(loop.NonFiniteAbort, match="2 consecutive steps had a non-finite"):
        loop.run(config, str(tmp_path), devices=ONE)
    recs = records(str(tmp_path))
    assert [recs[s]["skipped"] for s in sorted(recs)] == [1.0, 1.0]


def test_bad_config_fails_before_compiling(tmp_path):
    config = tiny_config(global_batch=6)
    with pytest.raises(ValueError, match=r"train.global_batch=6 .*\(8 ways\)"):
        loop.run(config, str(tmp_path))  # 8 devices: fsdp=8 cannot split 6 rows
    assert not os.path.exists(tmp_path / "checkpoints")
    config = tiny_config()
    config.model.num_kv_heads = 3
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        loop.run(config, str(tmp_path), devices=ONE)
