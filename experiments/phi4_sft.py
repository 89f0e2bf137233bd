"""Phi-4 SFT: the mid-trained 14B fine-tuned on ChatML conversations, loss on assistant tokens.

    python -m launch.tpu --exp=phi4_sft --workdir=gs://BUCKET/phi4_sft --tpu=v5p-128 \\
        --zone=ZONE --exp.data.data_root=DATA --exp.train.init_from=gs://BUCKET/phi4_midtrain
    python -m launch.local --exp=phi4_sft:smoke --workdir=workdirs/phi4_sft_smoke
        # after phi4_midtrain:smoke (its default init_from), or --exp.train.init_from= (scratch)

Data first (once; the store, with its malformed-conversation report):

    python -m phi4_jax.data.sft --input conversations.jsonl --output DATA/sft \\
        --max_tokens 16384
    python -m phi4_jax.posttrain.demo sft --num_conversations 400 --max_tokens 128 \\
        --output workdirs/phi4_sft_smoke_data/sft                # smoke: demo conversations

The paper's numbers: learning rate 1e-6, about 8B tokens (data_mixtures/phi4_sft.py
TOTAL_TOKENS; train.steps derived), ChatML with <|im_sep|>, loss on assistant tokens only
(phi4_jax/data/sft.py renders the masks; the objective is next_token: SFT differs
from pre-training only in its data's loss mask). Not stated, chosen here: 16,384 positions (the
mid-trained context; conversations are packed best-fit, each its own segment), 256 sequences per
step (4.2M tokens: 1,907 steps), warm-up 100 steps, then linear decay to 0.1 x peak (base.py's
schedule shape); AdamW moments and weight decay as in pre-training; full remat, one sequence per
device per micro-step. The RoPE base is the preset's 250,000 (mid-training's).

Chain: init_from the mid-training run (parameters only). The next stage, phi4_dpo_pts, starts
from this run's workdir and uses it as its reference.

Arg `smoke`: the tiny model (experiments.base.shrink) at 128 positions on the demo conversations
(digit questions) under workdirs/phi4_sft_smoke_data, 20 steps at lr 3e-3 (1e-6 does not move a
tiny model in 20 steps), from workdirs/phi4_midtrain_smoke.
"""

from __future__ import annotations

from data_mixtures.phi4_sft import TOTAL_TOKENS
from experiments.base import base_config, parse_arg, scale_loss_chunks, shrink, token_budget

PEAK_LR = 1e-6  # the paper
SEQ_LEN = 16_384  # not stated: the mid-trained context
GLOBAL_BATCH = 256  # not stated
WARMUP_STEPS = 100  # not stated
SMOKE_DATA_ROOT = "workdirs/phi4_sft_smoke_data"


def get_config(arg: str | None = None):
    args = parse_arg(arg, smoke=False)
    c = base_config()
    c.name = "phi4_sft"
    c.model.preset = "phi4_14b"
    c.model.remat = "full"
    c.data.mixture = "phi4_sft"
    c.data.seq_len = SEQ_LEN
    c.optimizer.peak_lr = PEAK_LR
    c.optimizer.warmup_steps = WARMUP_STEPS
    c.train.global_batch = GLOBAL_BATCH
    c.train.per_device_batch = 1
    scale_loss_chunks(c)  # 32 at 16384: float32 logits blocks of 16384 x 3136
    c.train.checkpoint_every = 200
    c.train.init_from = "workdirs/phi4_midtrain"
    token_budget(c, TOTAL_TOKENS)
    if args.smoke:
        shrink(c, seq_len=128, global_batch=8, steps=20, mixture="phi4_sft")
        c.data.data_root = SMOKE_DATA_ROOT
        c.optimizer.peak_lr = 3e-3
        c.train.init_from = "workdirs/phi4_midtrain_smoke"
    return c
