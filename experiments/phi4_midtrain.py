"""Phi-4 mid-training (context extension): from the pretrained 14B, about 250B tokens at 16K.

    python -m launch.tpu --exp=phi4_midtrain --workdir=gs://BUCKET/phi4_midtrain \\
        --exp.train.init_from=gs://BUCKET/phi4_pretrain --tpu=v5p-1024 --zone=ZONE --plan_batch
    python -m launch.tpu --exp=phi4_midtrain --dry_run --tpu=v5p-128 --plan_batch
    python -m launch.local --exp=phi4_midtrain:smoke --workdir=workdirs/phi4_midtrain_smoke
        # after phi4_pretrain:smoke in workdirs/phi4_pretrain_smoke (its default init_from)

Everything not listed is phi4_pretrain's (the same get_config, then these changes):
  init_from    the pretraining run's workdir (parameters only; fresh optimizer; step 0). The
               default, workdirs/phi4_pretrain, fails loudly when absent: pass the real one.
  RoPE base    250,000: the released phi-4 value, read from the phi4_14b preset
  seq_len      16,384 (the model's max positions)
  peak lr      pretraining's peak / 10, computed from phi4_pretrain (3e-4 -> 3e-5)
  tokens       about 250B: data_mixtures/phi4_midtrain.py TOTAL_TOKENS (train.steps derived)
  mixture      data_mixtures/phi4_midtrain.py: 30% long-context, 70% recall of Table 5
Not stated in the paper, chosen here: the global batch keeps pretraining's tokens per step,
5760 x 4096 = 1440 x 16384 sequences (so 10,596 steps); warm-up 500 steps; the loss's
vocabulary slices scale with the sequence (32 at 16K) so each float32 logits block per device is
the same size as in pretraining. 1440 = 2^5 x 45 does not split over 64 batch-sharded chips:
on v5p-128 use `--plan_batch` (e.g. tensor=2 x fsdp=32) or override the mesh.

Arg `smoke`: the tiny model (pretrain smoke's shape) at 16,384 positions, batch 1, 2 steps, on
the embedded corpus shaped like the mid-training mixture (data_mixtures/embedded_midtrain.py:
the embedded documents longer than 8K tokens as long-context sources, packed best-fit to 16K, so
positions reach 16K), from workdirs/phi4_pretrain_smoke.
"""

from __future__ import annotations

from data_mixtures.phi4_midtrain import TOTAL_TOKENS
from experiments import phi4_pretrain
from experiments.base import parse_arg, scale_loss_chunks, shrink, token_budget
from phi4_jax.model import preset

SEQ_LEN = 16_384
LR_FACTOR = 0.1  # the paper: the peak learning rate is reduced 10x from pretraining
WARMUP_STEPS = 500  # not stated


def get_config(arg: str | None = None):
    args = parse_arg(arg, smoke=False)
    c = phi4_pretrain.get_config()
    pretrain_seq_len = c.data.seq_len
    pretrain_tokens_per_step = c.train.global_batch * pretrain_seq_len
    c.name = "phi4_midtrain"
    c.model.rope_theta = preset("phi4_14b").rope_theta  # 250K as released
    c.data.mixture = "phi4_midtrain"
    c.data.seq_len = SEQ_LEN
    c.optimizer.peak_lr = c.optimizer.peak_lr * LR_FACTOR
    c.optimizer.warmup_steps = WARMUP_STEPS
    c.train.global_batch = pretrain_tokens_per_step // SEQ_LEN
    scale_loss_chunks(c)
    c.train.init_from = "workdirs/phi4_pretrain"
    token_budget(c, TOTAL_TOKENS)
    if args.smoke:
        shrink(c, seq_len=SEQ_LEN, global_batch=1, steps=2, mixture="embedded_midtrain")
        c.train.init_from = "workdirs/phi4_pretrain_smoke"
    return c
