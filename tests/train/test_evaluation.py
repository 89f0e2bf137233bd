"""Evaluation during training (phi4_jax/train/evaluation.py): held-out loss against numpy on
the trained parameters, `eval/loss/<source>` rows at the eval steps only, a resumed run
evaluating at the same steps with the same values, and tasks plugged in by a scorer."""

import json
import os

import jax
import numpy as np
import pytest

from phi4_jax.train import evaluation, inputs, loop
from phi4_jax.train.config import ConfigError, RunConfig
from tests.train.conftest import tiny_config

ONE = jax.devices()[:1]
KEY = "eval/loss/synthetic"


def config(steps):
    c = tiny_config(steps=steps, checkpoint_every=2)
    c.eval.update(dict(every=2, heldout_rows=8, batch_size=4))
    return c


def rows(workdir):
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            out[rec["step"]] = rec
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    whole = str(tmp_path_factory.mktemp("whole"))
    loop.run(config(4), whole, devices=ONE)
    resumed = str(tmp_path_factory.mktemp("resumed"))
    loop.run(config(2), resumed, devices=ONE)
    loop.run(config(4), resumed, devices=ONE)
    return whole, resumed


def test_rows_carry_eval_loss_at_eval_steps_only(runs):
    recs = rows(runs[0])
    assert [s for s in sorted(recs) if KEY in recs[s]] == [2, 4]
    assert all(np.isfinite(recs[s][KEY]) for s in (2, 4))
    assert recs[4][KEY] < recs[2][KEY] + 0.5  # a real loss near the training loss
    assert abs(recs[4][KEY] - recs[4]["loss"]) < 1.5


def test_resumed_run_evaluates_at_the_same_steps(runs):
    whole, resumed = map(rows, runs)
    assert [s for s in sorted(resumed) if KEY in resumed[s]] == [2, 4]
    for s in (2, 4):
        assert resumed[s][KEY] == whole[s][KEY]


def test_heldout_loss_equals_numpy(runs):
    from phi4_jax.serve.loading import load_workdir

    model, _ = load_workdir(runs[0], step=4)
    run = RunConfig.from_experiment(config(4))
    batch = inputs.heldout_batches(run.data, rows=8, vocab_size=256)["synthetic"]
    hidden = np.asarray(model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"]),
                        np.float64)
    logits = hidden @ np.asarray(model.output_weight(), np.float64)
    top = logits.max(-1, keepdims=True)
    lse = top[..., 0] + np.log(np.exp(logits - top).sum(-1))
    picked = np.take_along_axis(logits, batch["targets"][..., None], -1)[..., 0]
    mask = batch["loss_mask"]
    expected = ((lse - picked) * mask).sum() / mask.sum()
    np.testing.assert_allclose(rows(runs[0])[4][KEY], expected, rtol=2e-5)


def test_tasks_need_a_scorer_and_use_it(tmp_path, monkeypatch):
    c = config(2)
    c.eval.update(dict(heldout_rows=0, tasks=("mc:fake.jsonl",)))
    monkeypatch.setattr(evaluation, "_TASK_SCORER", [])
    with pytest.raises(ConfigError, match="eval.tasks.*needs a task scorer"):
        loop.run(c, str(tmp_path / "a"), devices=ONE)
    seen = []

    def factory(run, graphdef, model_config):
        def score(params):
            seen.append(jax.tree.leaves(params)[0].shape)
            return {"fake/acc": 0.5}
        return score

    evaluation.register_task_scorer(factory)
    loop.run(c, str(tmp_path / "b"), devices=ONE)
    assert rows(str(tmp_path / "b"))[2]["eval/fake/acc"] == 0.5 and len(seen) == 1


def test_config_errors_name_the_field():
    c = config(2)
    c.eval.heldout_rows = 6
    with pytest.raises(ConfigError, match="eval.heldout_rows=6 is not a multiple of "
                                          "eval.batch_size=4"):
        RunConfig.from_experiment(c)
    c.eval.update(dict(heldout_rows=0, tasks=()))
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        RunConfig.from_experiment(c)
    c.eval.bogus = 1
    with pytest.raises(ConfigError, match="unknown config key eval.bogus"):
        RunConfig.from_experiment(c)
