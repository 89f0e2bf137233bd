"""The loop end to end on one device: trains, checkpoints, logs, resumes, reports a finished
run, init_from; a corrupt newest checkpoint falls back and ends as if uninterrupted; metrics
rows are on disk before each checkpoint; non-finite steps are never saved; token ids outside
the vocabulary fail at the first batch."""

import glob
import json
import logging
import os

import jax
import numpy as np
import pytest

from phi4_jax.train import checkpoint, inputs, loop, metrics
from tests.train.conftest import tiny_config
from tests.train.test_checkpoint import flip_bytes, largest_data_file

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
    assert not os.path.exists(os.path.join(workdir, "lease.json"))  # released


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


def test_a_corrupt_newest_checkpoint_falls_back_and_ends_as_uninterrupted(first_run, tmp_path,
                                                                           caplog, capsys):
    # The uninterrupted 6-step run (checkpoints 3 and 6; a test above extended it to 8).
    reference = {s: r for s, r in records(first_run[0]).items() if s <= 6}
    workdir = str(tmp_path)
    loop.run(tiny_config(steps=6), workdir, devices=ONE)
    flip_bytes(largest_data_file(tmp_path / "checkpoints" / "6"))
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        result = loop.run(tiny_config(steps=6), workdir, devices=ONE)
    corrupt = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(corrupt) == 1 and corrupt[0].startswith("checkpoint step 6 is corrupt")
    assert "does not match its checksum" in corrupt[0] and "restoring step 3" in corrupt[0]
    assert not [r for r in caplog.records if r.exc_info]  # no tracebacks
    assert result.start == "checkpoint" and result.step == 6
    assert "start from checkpoint at step 3" in capsys.readouterr().out
    assert result.metrics["loss"] == reference[6]["loss"]  # exactly the uninterrupted run's
    assert {s: r["loss"] for s, r in records(workdir).items()} == \
        {s: r["loss"] for s, r in reference.items()}


def test_metrics_rows_are_on_disk_before_each_checkpoint(tmp_path, monkeypatch):
    seen, synced = {}, []
    save = checkpoint.Checkpointer.save

    def spying_save(self, step, *args):
        with open(tmp_path / "metrics.jsonl") as f:  # what another reader sees now
            seen[step] = sorted(json.loads(line)["step"] for line in f)
        return save(self, step, *args)

    fsync = os.fsync
    monkeypatch.setattr(checkpoint.Checkpointer, "save", spying_save)
    monkeypatch.setattr(metrics.os, "fsync", lambda fd: (
        synced.append(os.readlink(f"/proc/self/fd/{fd}")), fsync(fd)))
    loop.run(tiny_config(steps=4, checkpoint_every=2, log_every=3), str(tmp_path), devices=ONE)
    assert seen == {2: [1, 2], 4: [1, 2, 3, 4]}  # step 2 is not a log step: still there
    assert synced.count(str(tmp_path / "metrics.jsonl")) == 2  # one fsync per checkpoint


@pytest.fixture
def nan_batches_from(monkeypatch):
    """Synthetic batches from index `first` on carry a NaN loss mask: their loss is NaN."""
    def poison(first):
        batch = inputs.SyntheticIterator.batch

        def poisoned(self, index):
            out = batch(self, index)
            if index >= first:
                out["loss_mask"] = np.full_like(out["loss_mask"], np.nan)
            return out

        monkeypatch.setattr(inputs.SyntheticIterator, "batch", poisoned)
    return poison


def test_nonfinite_steps_are_never_saved_and_abort_after_k_in_a_row(tmp_path, nan_batches_from,
                                                                    capsys):
    nan_batches_from(2)  # steps 1, 2 train; 3, 4, 5 are NaN
    config = tiny_config(steps=6, checkpoint_every=1, keep=2, max_nonfinite_in_row=3)
    with pytest.raises(loop.NonFiniteAbort,
                       match=r"3 consecutive steps had a non-finite .* nothing was saved from "
                             r"them: the last checkpoint \(step 2\) is unaffected"):
        loop.run(config, str(tmp_path), devices=ONE)
    out = capsys.readouterr().out
    assert "step 3 is not checkpointed" in out and "step 4 is not checkpointed" in out
    recs = records(str(tmp_path))
    assert [recs[s]["skipped"] for s in sorted(recs)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    # Without the guard, keep=2 would hold steps 4 and 5 (saved from NaN steps) by now.
    ckpts = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), keep=2)
    assert ckpts.steps() == [1, 2]
    prog = loop.build(config, devices=ONE)
    state, _, step = ckpts.restore(prog.abstract_state, prog.state_shardings)
    assert step == 2 and int(state.nonfinite_in_row) == 0
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))
    ckpts.close()
    assert not os.path.exists(tmp_path / "lease.json")  # released on the exception too


def test_token_ids_outside_the_vocabulary_fail_at_the_first_batch(tmp_path, monkeypatch,
                                                                  capsys):
    batch = inputs.SyntheticIterator.batch

    def out_of_range(self, index):
        out = batch(self, index)
        out["tokens"][0, 3] = self.vocab_size
        return out

    monkeypatch.setattr(inputs.SyntheticIterator, "batch", out_of_range)
    with pytest.raises(ValueError, match=r"the first batch of data.source='synthetic' holds "
                                         r"token id 256 in 'tokens', outside "
                                         r"model.vocab_size=256"):
        loop.run(tiny_config(), str(tmp_path), devices=ONE)
    assert "compiled" not in capsys.readouterr().out  # before the step compiles
    assert not os.path.exists(tmp_path / "lease.json")


def test_bad_config_fails_before_compiling(tmp_path):
    config = tiny_config(global_batch=6)
    with pytest.raises(ValueError, match=r"train.global_batch=6 .*\(8 ways\)"):
        loop.run(config, str(tmp_path))  # 8 devices: fsdp=8 cannot split 6 rows
    assert not os.path.exists(tmp_path / "checkpoints")
    config = tiny_config()
    config.model.num_kv_heads = 3
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        loop.run(config, str(tmp_path), devices=ONE)
