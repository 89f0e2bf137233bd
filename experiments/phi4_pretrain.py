"""Phi-4 pretraining: 14B parameters, about 10T tokens at 4K context, the Table 5 mixture.

    python -m launch.tpu --exp=phi4_pretrain --workdir=gs://BUCKET/phi4_pretrain \\
        --tpu=v5p-1024 --num_slices=2 --zone=ZONE --plan_batch            # a pod, from here
    python -m launch.tpu --exp=phi4_pretrain --dry_run --tpu=v5p-128      # AOT compile, memory
    python -m launch.local --exp=phi4_pretrain:smoke --workdir=workdirs/phi4_pretrain_smoke

The paper's numbers (arXiv 2412.08905) and where each lives:
  global batch 5760 x seq 4096, peak lr 3e-4, linear warm-up and linear decay, weight decay 0.1:
      experiments/base.py (the defaults of every phase)
  RoPE base 10,000 at 4K (phi-3-medium's; the released 14B config carries mid-training's 250K):
      here, the one place
  about 10T tokens: data_mixtures/phi4_pretrain.py TOTAL_TOKENS; train.steps is derived from it
      (10T // (5760 x 4096) = 423,855) and follows --exp.train.global_batch / --exp.data.seq_len
  Table 5 fractions and unique tokens: data_mixtures/phi4_pretrain.py

Execution choices (not in the paper): FSDP over every chip of a slice and DCN on data across
slices (base.py's mesh and rules 'fsdp'), full remat with scanned layers, bfloat16 compute over
float32 master weights (the preset), one sequence per device per micro-step
(train.per_device_batch=1: 90 micro-batches on v5p-128). A topology whose batch-sharded devices
do not divide 5760 (e.g. 256 chips) needs another layout: `--plan_batch` picks one.

Arg: `smoke` shrinks it to the tiny model on the embedded corpus (experiments.base.shrink).
"""

from __future__ import annotations

from data_mixtures.phi4_pretrain import TOTAL_TOKENS
from experiments.base import base_config, parse_arg, shrink, token_budget

ROPE_THETA = 10_000.0  # the pretraining RoPE base (paper: inherited from phi-3-medium)


def get_config(arg: str | None = None):
    args = parse_arg(arg, smoke=False)
    c = base_config()
    c.name = "phi4_pretrain"
    c.model.preset = "phi4_14b"
    c.model.rope_theta = ROPE_THETA
    c.model.remat = "full"
    c.data.mixture = "phi4_pretrain"
    c.train.per_device_batch = 1
    token_budget(c, TOTAL_TOKENS)
    if args.smoke:
        shrink(c)
    return c
