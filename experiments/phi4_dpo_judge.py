"""Phi-4 DPO round 2: judge-guided pairs (whole replies), from the DPO-PTS model.

    python -m launch.tpu --exp=phi4_dpo_judge --workdir=gs://BUCKET/phi4_dpo_judge \\
        --tpu=v5p-128 --zone=ZONE --exp.dpo.pairs=JUDGE/pairs.jsonl,REFUSAL/pairs.jsonl \\
        --exp.train.init_from=gs://BUCKET/phi4_dpo_pts
    python -m launch.local --exp=phi4_dpo_judge:smoke --workdir=workdirs/phi4_dpo_judge_smoke
        # after phi4_dpo_pts:smoke (its default init_from)
    python -m phi4_jax.train.dpo.batches plan --pairs JUDGE/pairs.jsonl,REFUSAL/pairs.jsonl \\
        --seq_len 8192 --global_batch 64          # the exact steps per epoch

The paper: about 850K judge-guided pairs (Table 8: 532K by accuracy score, 266K by overall
score, 43,842 unknown + safety), replies of GPT-4o, GPT-4t and phi-4; plus 1-5% of the
hallucination-refusal pairs. Everything else is phi4_dpo_pts's (experiments/phi4_dpo_pts.py:
loss, beta, lr, schedule, batch, all not stated in the paper), except:

  init_from / reference  the DPO-PTS run (the previous stage is this stage's reference)
  seq_len                8,192 (not stated): a pair's prompt + both replies must fit one row;
                         longer pairs are skipped and counted in WORKDIR/pairs_report.json
  steps                  PAIRS / (64 rows x an assumed 2 pairs per row) = 6,577

Arg `smoke`: as phi4_dpo_pts:smoke, from workdirs/phi4_dpo_pts_smoke.
"""

from __future__ import annotations

import math

from experiments.base import parse_arg
from experiments.phi4_dpo_pts import GLOBAL_BATCH, dpo_config

PAIRS = 532_000 + 266_000 + 43_842  # Table 8
PAIRS_PER_ROW = 2  # an assumption for the step count; `dpo.batches plan` measures it
SEQ_LEN = 8192


def get_config(arg: str | None = None):
    args = parse_arg(arg, smoke=False)
    c = dpo_config(name="phi4_dpo_judge", pairs="workdirs/judge/pairs.jsonl,"
                   "workdirs/refusal/pairs.jsonl", num_pairs=PAIRS, seq_len=SEQ_LEN,
                   init_from="workdirs/phi4_dpo_pts", smoke=args.smoke,
                   smoke_init_from="workdirs/phi4_dpo_pts_smoke")
    if not args.smoke:
        c.train.steps = math.ceil(PAIRS / (PAIRS_PER_ROW * GLOBAL_BATCH))
        c.optimizer.warmup_steps = c.train.steps // 10
    return c
