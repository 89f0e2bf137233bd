"""Tiny configs for training tests: the tiny preset with a 256-token vocab on synthetic data.

Compiling dominates these tests on CPU. Programs that several tests build identically (the
1-device step of test_loop and test_equivalence, say) come from JAX's persistent compilation
cache, kept in a temporary directory for the session.
"""

import tempfile

import jax

import experiments

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="phi4_jax_test_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def tiny_config(**train):
    """tiny_pretrain shrunk for tests (fields of `train` may be overridden by keyword)."""
    c = experiments.get_config("tiny_pretrain")
    c.model.vocab_size = 256
    c.data.source = "synthetic"
    c.data.seq_len = 32
    c.optimizer.warmup_steps = 0
    c.optimizer.decay_steps = 100  # fixed: train.steps does not change the compiled step
    c.optimizer.peak_lr = 3e-3
    c.train.update(dict(global_batch=8, loss_vocab_chunks=4, steps=6, checkpoint_every=3,
                        log_every=1, peak_flops=1e12))
    c.train.update(train)
    c.eval.every = 0  # tests/train/test_evaluation.py turns it on
    return c
