"""Phi-4 DPO round 1: Pivotal Token Search pairs (single-token completions), from the SFT model.

    python -m launch.tpu --exp=phi4_dpo_pts --workdir=gs://BUCKET/phi4_dpo_pts --tpu=v5p-128 \\
        --zone=ZONE --exp.dpo.pairs=PTS/pairs.jsonl,REFUSAL/pairs.jsonl \\
        --exp.train.init_from=gs://BUCKET/phi4_sft
    python -m launch.local --exp=phi4_dpo_pts:smoke --workdir=workdirs/phi4_dpo_pts_smoke
        # after phi4_sft:smoke (its default init_from)

Data: the exact steps per epoch of a pair set, and the smoke pairs:

    python -m phi4_jax.train.dpo.batches plan --pairs PTS/pairs.jsonl,REFUSAL/pairs.jsonl \\
        --seq_len 4096 --global_batch 64
    python -m phi4_jax.posttrain.demo pairs --output workdirs/phi4_dpo_smoke_data

The paper: DPO on about 250K PTS pairs (Table 7: 3,000 + 132,859 + 76,552 + 16,080 + 21,806),
each stage mixing in 1-5% of the hallucination-refusal pairs (5-token completions): list both
files in dpo.pairs (their mix is their sizes). Pairs stay token ids end to end
(phi4_jax/train/dpo/batches.py).

Chain: init_from the SFT run, and the reference is that same checkpoint (train.reference_from
unset = the start parameters); with dpo.reference_cache its log-probs are computed once, cached
under WORKDIR/reference_cache (or dpo.cache_dir) and reused on resume. phi4_dpo_judge starts
from this run.

Not stated in the paper, chosen here (documented defaults): the sigmoid DPO loss with beta 0.1
(Rafailov et al.'s, base.py's dpo section); peak lr 5e-7 (half the SFT rate, as open DPO
recipes at 7-70B use), 10% linear warm-up then linear decay to 0.1 x peak; one epoch; 64 rows of
4,096 positions per step with up to 16 pairs per row, so steps = PAIRS / (64 x an assumed 4
pairs per row) = 978 (run `dpo.batches plan` for the real count and pass --exp.train.steps).

Arg `smoke`: the tiny model at 64 positions, 8 rows per step, 30 steps at lr 1e-3 on the demo
digit pairs (chosen = x + 1 mod 10) from workdirs/phi4_sft_smoke.
"""

from __future__ import annotations

import math

from experiments.base import base_config, parse_arg, scale_loss_chunks, shrink

PAIRS = 250_297  # Table 7
PAIRS_PER_ROW = 4  # an assumption for the step count; `dpo.batches plan` measures it
SEQ_LEN = 4096
GLOBAL_BATCH = 64
PEAK_LR = 5e-7
SMOKE_PAIRS = "workdirs/phi4_dpo_smoke_data/train.jsonl"


def dpo_config(*, name: str, pairs: str, num_pairs: int, seq_len: int, init_from: str,
               smoke: bool, smoke_init_from: str):
    """The DPO stage both rounds share (see the module docstring)."""
    c = base_config()
    c.name = name
    c.objective = "dpo"
    c.model.preset = "phi4_14b"
    c.model.remat = "full"
    c.data.source = "pairs"
    c.data.seq_len = seq_len
    c.dpo.pairs = pairs
    c.optimizer.peak_lr = PEAK_LR
    c.train.global_batch = GLOBAL_BATCH
    c.train.per_device_batch = 1
    c.train.steps = math.ceil(num_pairs / (PAIRS_PER_ROW * GLOBAL_BATCH))
    c.optimizer.warmup_steps = c.train.steps // 10
    scale_loss_chunks(c)  # logits blocks as in pre-training
    c.train.checkpoint_every = 100
    c.train.init_from = init_from
    if smoke:
        shrink(c, seq_len=64, global_batch=8, steps=30)
        c.data.source = "pairs"
        c.dpo.pairs = SMOKE_PAIRS
        c.optimizer.peak_lr = 1e-3
        c.train.init_from = smoke_init_from
    return c


def get_config(arg: str | None = None):
    args = parse_arg(arg, smoke=False)
    return dpo_config(name="phi4_dpo_pts", pairs="workdirs/pts/pairs.jsonl,"
                      "workdirs/refusal/pairs.jsonl", num_pairs=PAIRS, seq_len=SEQ_LEN,
                      init_from="workdirs/phi4_sft", smoke=args.smoke,
                      smoke_init_from="workdirs/phi4_sft_smoke")
