"""Tiny pretraining on the embedded mixture: the README's main command (a few minutes on CPU).

    python -m launch.local --exp=tiny_pretrain --workdir=workdirs/tiny

Trains the `tiny` preset (2 layers, width 128, the real 100,352-token vocabulary) with the
Phi-4 recipe's optimizer and schedule shape; leaves checkpoints in WORKDIR/checkpoints and
TensorBoard logs in WORKDIR/tensorboard; every 20 steps it evaluates the held-out loss of
each source (`eval/loss/<source>` in metrics.jsonl and TensorBoard). Running it again with the
same workdir resumes.
Without the data engine's corpus: --exp.data.source=synthetic.
"""

from __future__ import annotations

from experiments.base import base_config


def get_config(arg: str | None = None):
    del arg
    c = base_config()
    c.name = "tiny_pretrain"
    c.model.preset = "tiny"
    c.model.dtype = "float32"  # XLA:CPU computes bfloat16 slowly; TPU configs keep bfloat16
    c.data.mixture = "embedded"
    c.data.seq_len = 128
    c.optimizer.peak_lr = 3e-3
    c.optimizer.warmup_steps = 10
    c.train.steps = 60
    c.train.global_batch = 8
    c.train.checkpoint_every = 20
    c.train.log_every = 5
    c.train.loss_vocab_chunks = 1  # 8 x 128 x 100352 float32 logits fit a CPU; pods chunk
    c.eval.every = 20  # held-out loss per source at steps 20, 40, 60
    c.eval.heldout_rows = 8  # one batch of 8 x 128 tokens per source
    return c
