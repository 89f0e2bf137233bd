"""The tiny pretrain -> midtrain chain on CPU: phi4_pretrain:smoke for a few steps, then
phi4_midtrain:smoke from its checkpoint at 16,384 positions, RoPE 250K and lr / 10.

Both run the real configs (tiny model, real vocabulary, the embedded corpus; mid-training's
mixture shaped by data_mixtures/embedded_midtrain.py) on one CPU device: batch 1 at 16K.
"""

import math

import jax
import numpy as np
import pytest

import experiments
from phi4_jax.train import inputs, loop
from phi4_jax.train.config import RunConfig

PRETRAIN_STEPS = 2


@pytest.mark.slow
def test_pretrain_then_midtrain_at_16k(tmp_path):
    device = jax.devices()[:1]
    cache = str(tmp_path / "data")
    pre = experiments.get_config("phi4_pretrain:smoke")
    pre.train.steps = PRETRAIN_STEPS
    pre.optimizer.warmup_steps = min(pre.optimizer.warmup_steps, PRETRAIN_STEPS)
    pre.data.cache_dir = cache
    result = loop.run(pre, str(tmp_path / "pre"), devices=device)
    assert result.step == PRETRAIN_STEPS and result.start == "scratch"

    mid = experiments.get_config("phi4_midtrain:smoke")
    mid.train.init_from = str(tmp_path / "pre")
    run = RunConfig.from_experiment(mid)
    model = run.model
    assert model.rope_theta == 250_000 and mid.data.seq_len == 16384
    assert math.isclose(mid.optimizer.peak_lr, pre.optimizer.peak_lr / 10)
    assert mid.train.global_batch == 1

    # The batches the run trains on (the stream is a pure function of the config).
    data = inputs.build_iterator(run.data, global_batch=1, steps=mid.train.steps,
                                 vocab_size=model.vocab_size, host=0, host_count=1)
    positions = np.stack([next(data)["positions"] for _ in range(mid.train.steps)])
    assert positions.max() == 16383 and (positions >= 8192).sum() >= 8192

    result = loop.run(mid, str(tmp_path / "mid"), devices=device)
    assert result.start == "init_from" and result.step == mid.train.steps
    assert np.isfinite(result.metrics["loss"])
