"""Helpers of the DPO tests: a small DPO config, synthetic pairs, pair files."""

import jax
import numpy as np

import experiments
from phi4_jax.posttrain.records import JsonlWriter, Pair

ONE = jax.devices()[:1]
VOCAB = 256


def small_config(**dpo_fields):
    """phi4_dpo_pts:smoke with a 256-token vocabulary, 32 positions, 4 rows per step."""
    c = experiments.get_config("phi4_dpo_pts:smoke")
    c.model.vocab_size = VOCAB
    c.data.seq_len = 32
    c.train.global_batch = 4
    c.train.loss_vocab_chunks = 4
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_steps = 100
    c.optimizer.peak_lr = 1e-2
    c.train.update(dict(checkpoint_every=2, log_every=1, peak_flops=1e12, init_from=None))
    c.dpo.update(dpo_fields)
    return c


def synthetic_pairs(n, seed=0, completion_lengths=(1,)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = tuple(int(t) for t in rng.integers(1, VOCAB, int(rng.integers(2, 7))))
        c_len = completion_lengths[i % len(completion_lengths)]
        chosen = tuple(int(t) for t in rng.integers(1, VOCAB, c_len))
        rejected = tuple(int(t) for t in rng.integers(1, VOCAB, c_len))
        if rejected == chosen:
            rejected = ((chosen[0] % (VOCAB - 1)) + 1, *chosen[1:])
        out.append(Pair(f"p{i}", prompt, chosen, rejected, "pts", "synthetic"))
    return out


def write_pairs(path, pairs):
    with JsonlWriter(path, append=False) as w:
        w.write(pairs)
    return str(path)
