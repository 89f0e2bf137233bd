"""A new objective plugs in from outside the package: registered here, trained by `loop.run`.

The toy `row_weighted` objective: next-token cross-entropy where each row counts with a weight
from its own batch key `row_weight` (float32 [B], logical axes ('batch',)), plus an L2 pull
towards a frozen copy of the start parameters (`anchor`, sharded like the parameters) scaled by
a frozen scalar (`scale`, replicated) that `load_frozen` sets on a fresh start; its config is
its own `row_weighted` section; its input builder wraps the synthetic stream. Nothing outside
this file knows it.
"""

import dataclasses
import json
import os
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

from phi4_jax.model import merge_for_compute
from phi4_jax.sharding import axes as ax
from phi4_jax.train import checkpoint, inputs, loop, objectives
from phi4_jax.train.losses import next_token_loss
from tests.train.conftest import tiny_config

ONE = jax.devices()[:1]


@dataclasses.dataclass(frozen=True)
class RowWeightedConfig:
    anchor_weight: float  # the L2 pull's coefficient
    scale: float  # the frozen scalar load_frozen installs


class WeightedRows:
    """The synthetic stream plus `row_weight`: 1 on even rows, 0.5 on odd rows."""

    def __init__(self, base):
        self.base = base

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.base)
        rows = len(batch["tokens"])
        return {**batch, "row_weight": np.where(np.arange(rows) % 2, 0.5, 1.0)}

    def get_state(self):
        return self.base.get_state()

    def set_state(self, state):
        self.base.set_state(state)


@dataclasses.dataclass(frozen=True)
class RowWeighted(objectives.Objective):
    anchor_weight: float
    scale: float
    name: ClassVar[str] = "row_weighted"
    batch_spec: ClassVar = {**objectives.TOKEN_FIELDS,
                            "row_weight": objectives.BatchField(np.float32, (ax.BATCH,))}

    def weight(self, batch):
        return jnp.sum(batch["loss_mask"] * batch["row_weight"][:, None])

    def loss(self, graphdef, params, frozen, batch, rng):
        del rng
        model = merge_for_compute(graphdef, params)
        hidden = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
        mask = batch["loss_mask"] * batch["row_weight"][:, None]
        sums = next_token_loss(hidden, model.output_weight(), batch["targets"], mask)
        drift = sum(jnp.sum(jnp.square(p - a)) for p, a in zip(
            jax.tree.leaves(params), jax.tree.leaves(frozen["anchor"])))
        # The step divides by the global weight: scale the drift by this micro-batch's share.
        drift_sum = drift * self.weight(batch)
        pull = self.anchor_weight * frozen["scale"] * drift_sum
        return sums.xent + pull, {"loss": sums.xent, "drift": drift_sum}

    def frozen(self, params):
        return {"anchor": jax.tree.map(jnp.copy, params), "scale": jnp.zeros((), jnp.float32)}

    def load_frozen(self, program, state):
        scale = jax.device_put(jnp.float32(self.scale), program.state_shardings.frozen["scale"])
        return state._replace(frozen={**state.frozen, "scale": scale})

    def inputs(self, run, program, workdir, *, host, host_count):
        return WeightedRows(inputs.SyntheticIterator(
            batch_size=run.train.global_batch // host_count, seq_len=run.data.seq_len,
            vocab_size=program.model_config.vocab_size, seed=run.data.seed, host=host))


def from_run(run):
    section = run.section("row_weighted")
    return RowWeighted(anchor_weight=section.anchor_weight, scale=section.scale)


objectives.register("row_weighted", from_run, section=RowWeightedConfig)


def toy_config(**train):
    c = tiny_config(**train)
    c.objective = "row_weighted"
    c.row_weighted = config_dict.ConfigDict({"anchor_weight": 1e-2, "scale": 3.0})
    return c


def test_a_registered_objective_trains_through_the_loop(tmp_path):
    config = toy_config(steps=4, micro_batches=2, checkpoint_every=4)
    result = loop.run(config, str(tmp_path), devices=ONE)
    assert result.start == "scratch" and result.step == 4
    with open(tmp_path / "metrics.jsonl") as f:
        recs = [json.loads(line) for line in f]
    assert recs[0]["drift"] == 0.0 and recs[-1]["drift"] > 0  # starts at the anchor
    assert recs[-1]["loss"] < recs[0]["loss"]
    # The extra key reached the step: the weight counts odd rows' tokens half.
    batch = inputs.SyntheticIterator(batch_size=8, seq_len=32, vocab_size=256).batch(0)
    half = np.where(np.arange(8) % 2, 0.5, 1.0)[:, None]
    assert recs[0]["loss_tokens"] == pytest.approx(float((batch["loss_mask"] * half).sum()))

    prog = loop.build(config, devices=ONE)
    assert prog.batch_shapes["row_weight"].shape == (8,)
    assert prog.state_shardings.frozen["anchor"] == prog.state_shardings.params
    assert prog.state_shardings.frozen["scale"].spec == jax.sharding.PartitionSpec()
    ckpt = checkpoint.Checkpointer(os.path.join(tmp_path, "checkpoints"), keep=1)
    state, _, _ = ckpt.restore(prog.abstract_state, prog.state_shardings)
    ckpt.close()
    assert float(state.frozen["scale"]) == 3.0  # load_frozen ran on the fresh start
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.frozen["anchor"]),
                 jax.device_get(prog.init().params))


def test_the_registry_names_its_objectives():
    assert {"next_token", "dpo", "row_weighted"} <= set(objectives.names())
    assert objectives.sections()["row_weighted"] is RowWeightedConfig
    with pytest.raises(ValueError, match="already registered"):
        objectives.register("row_weighted", lambda run: None)
