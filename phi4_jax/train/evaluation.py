"""Evaluation during training: held-out loss per data source, and plugged-in tasks.

Every `eval.every` steps (and at `train.steps`) the loop calls `Evaluator(params)` right after
that step and merges what it returns into the step's metrics row (`metrics.jsonl`,
TensorBoard): `eval/loss/<source>` (mean next-token cross-entropy per loss token over the
source's `eval.heldout_rows` held-out rows; `phi4_jax.data.heldout` says how they are carved)
and `eval/<task>/<metric>` for each of `eval.tasks`. The steps evaluated depend only on the
step number, so a resumed run evaluates where an uninterrupted one does.

Held-out loss: the rows of every source are put on the mesh once, stacked [S x n, B, T] with
the batch sharding (B = `eval.batch_size`), and one pure step, compiled once, scans over the
S x n batches and returns the S losses as device scalars: the loop fetches them with the step's
own metrics, so evaluating adds no host sync and no copy to the train path.

Tasks: train does not know the harness (phi4_jax.eval imports serve, which imports train).
A launcher registers a factory, `register_task_scorer(factory)`; `factory(run, graphdef,
model_config)` returns `score(params) -> {"<task>/<metric>": float}`. launch/local.py registers
`phi4_jax.eval.in_training.task_scorer` when a config names tasks; without a registered
factory, a config with `eval.tasks` fails before anything compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from phi4_jax.model import merge_for_compute
from phi4_jax.sharding import axes as ax
from phi4_jax.train import inputs as inputs_lib
from phi4_jax.train import program as program_lib
from phi4_jax.train.config import ConfigError, RunConfig
from phi4_jax.train.losses import next_token_loss

TaskScorer = Callable[[Any], dict[str, float]]
TaskScorerFactory = Callable[[RunConfig, Any, Any], TaskScorer]
_TASK_SCORER: list[TaskScorerFactory] = []
BATCH_AXES = (None, ax.BATCH, ax.SEQ)  # [batches, rows, positions]


def register_task_scorer(factory: TaskScorerFactory) -> None:
    """Makes `eval.tasks` scoreable: `factory(run, graphdef, model_config)` -> score(params)."""
    _TASK_SCORER[:] = [factory]


def due(step: int, run: RunConfig) -> bool:
    every = run.eval.every
    return every > 0 and (step % every == 0 or step == run.train.steps)


def heldout_sums(params: Any, batches: dict[str, jax.Array], *, graphdef: Any,
                 vocab_chunks: int) -> tuple[jax.Array, jax.Array]:
    """Per batch of `batches` ([N, B, T] arrays): summed cross-entropy over its loss tokens
    and their count, float32 [N] each."""

    def body(_, batch):
        batch = {k: ax.constrain(v, BATCH_AXES[1:]) for k, v in batch.items()}
        model = merge_for_compute(graphdef, params)
        hidden = model.hidden(batch["tokens"], batch["positions"], batch["segment_ids"])
        sums = next_token_loss(hidden, model.output_weight(), batch["targets"],
                               batch["loss_mask"], vocab_chunks)
        return None, (sums.xent, jnp.sum(batch["loss_mask"].astype(jnp.float32)))

    return jax.lax.scan(body, None, batches)[1]


class Evaluator:
    """What the loop calls at an eval step: `evaluator(state.params)` -> {name: scalar}."""

    def __init__(self, run: RunConfig, prog: program_lib.Program):
        spec = run.eval
        self.sources: list[str] = []
        self._step = self._batches = self._score = None
        if spec.tasks:
            if not _TASK_SCORER:
                raise ConfigError(f"eval.tasks={list(spec.tasks)} needs a task scorer: "
                                  "launch.local registers phi4_jax.eval's "
                                  "(phi4_jax.train.evaluation.register_task_scorer)")
            self._score = _TASK_SCORER[0](run, prog.graphdef, prog.model_config)
        if spec.heldout_rows:
            self._build_heldout(run, prog)

    def _build_heldout(self, run: RunConfig, prog: program_lib.Program) -> None:
        spec, rules = run.eval, prog.rules
        ways = rules.shards((ax.BATCH,))[0]
        if spec.batch_size % ways:
            raise ConfigError(f"eval.batch_size={spec.batch_size} does not split over the "
                              f"{ways} batch-sharded devices")
        per_source = inputs_lib.heldout_batches(run.data, rows=spec.heldout_rows,
                                                vocab_size=prog.model_config.vocab_size)
        self.sources = sorted(per_source)
        n = spec.heldout_rows // spec.batch_size
        sharding = rules.sharding(BATCH_AXES)
        stacked = {k: np.concatenate([per_source[s][k].reshape(n, spec.batch_size, -1)
                                      for s in self.sources]) for k in inputs_lib.BATCH_KEYS}
        self._batches = {k: jax.make_array_from_callback(v.shape, sharding,
                                                         lambda i, v=v: v[i])
                         for k, v in stacked.items()}
        names, count = [f"eval/loss/{s}" for s in self.sources], n

        def losses(params, batches):
            xent, tokens = heldout_sums(params, batches, graphdef=prog.graphdef,
                                        vocab_chunks=run.train.loss_vocab_chunks)
            xent, tokens = xent.reshape(-1, count).sum(1), tokens.reshape(-1, count).sum(1)
            mean = xent / jnp.maximum(tokens, 1.0)
            return {name: mean[i] for i, name in enumerate(names)}

        params = prog.abstract_inputs()[0].params
        fn = jax.jit(program_lib._under_rules(losses, rules),
                     in_shardings=(prog.state_shardings.params,
                                   {k: sharding for k in self._batches}),
                     out_shardings=NamedSharding(prog.mesh, PartitionSpec()))
        self._step = fn.lower(params, self._batches).compile()

    def __call__(self, params: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._step is not None:
            out.update(self._step(params, self._batches))
        if self._score is not None:
            out.update({f"eval/{k}": v for k, v in self._score(params).items()})
        return out
