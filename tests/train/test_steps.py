"""The pure step: gradient accumulation equals the full batch; non-finite updates are skipped."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phi4_jax.train import inputs, loop, objectives, optimizer, state, steps
from phi4_jax.train.config import RunConfig
from tests.train.conftest import tiny_config


@pytest.fixture(scope="module")
def setup():
    config = RunConfig.from_experiment(tiny_config())
    objective = objectives.from_config(config)
    tx, _ = optimizer.from_config(config.optimizer, config.train.clip_norm, config.train.steps)
    graphdef, _, _ = state.model_graph(config.model)
    init = loop.build(config, devices=jax.devices()[:1]).init()  # the compiled init
    batch = inputs.SyntheticIterator(batch_size=8, seq_len=32, vocab_size=256).batch(0)
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    return config, objective, tx, graphdef, init, batch


def test_four_micro_batches_equal_the_full_batch(setup):
    _, objective, _, graphdef, init, batch = setup

    @functools.partial(jax.jit, static_argnames="micro_batches")
    def grads(params, batch, micro_batches):
        return steps.loss_and_grads(params, batch, graphdef=graphdef, objective=objective,
                                    frozen={}, rng=jax.random.PRNGKey(0),
                                    micro_batches=micro_batches)

    full_loss, full_stats, full_grads = grads(init.params, batch, 1)
    acc_loss, acc_stats, acc_grads = grads(init.params, batch, 4)
    np.testing.assert_allclose(acc_loss, full_loss, rtol=1e-6)
    np.testing.assert_allclose(acc_stats["loss"], full_stats["loss"], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
                 acc_grads, full_grads)
    # The loss is the masked mean over the whole batch (micro-batches weigh by their tokens).
    assert float(full_loss) == pytest.approx(np.log(256), rel=0.05)


def test_micro_batch_j_takes_every_mth_row():
    batch = {"tokens": jnp.arange(8)[:, None] * jnp.ones((8, 2), jnp.int32)}
    micro = steps.split_micro_batches(batch, 4, {"tokens": ("batch", "seq")})["tokens"]
    assert micro.shape == (4, 2, 2)
    np.testing.assert_array_equal(micro[:, :, 0], [[0, 4], [1, 5], [2, 6], [3, 7]])


def test_nonfinite_update_is_skipped_and_counted(setup):
    _, objective, tx, graphdef, init, batch = setup
    step = jax.jit(functools.partial(steps.train_step, graphdef=graphdef, objective=objective,
                                     tx=tx))
    poisoned = init._replace(params={**init.params,
                                     "lm_head": init.params["lm_head"].at[0, 0].set(jnp.nan)})
    new, metrics = step(poisoned, batch)
    assert int(metrics["skipped"]) == 1 and int(new.nonfinite_in_row) == 1
    assert int(new.step) == 1 and int(new.nonfinite_total) == 1
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new.params, poisoned.params)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), new.opt_state,
                 poisoned.opt_state)
    newer, metrics = step(new, batch)
    assert int(newer.nonfinite_in_row) == 2
    good, metrics = step(init, batch)
    assert int(metrics["skipped"]) == 0 and int(good.nonfinite_in_row) == 0
    assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    assert float(metrics["learning_rate"]) == pytest.approx(3e-3)
