"""The data-mixture ablation: a 7B model for 1T tokens per mixture (how Table 5 was chosen).

    python -m launch.tpu --exp=ablation_7b_1t:mixture=synthetic_only \\
        --workdir=gs://BUCKET/ablation_7b_1t/synthetic_only --tpu=v5p-256 --zone=ZONE --plan_batch
    python -m launch.tpu --exp=ablation_7b_1t --dry_run --tpu=v5p-128
    python -m launch.local --exp=ablation_7b_1t:smoke,mixture=more_web --workdir=/tmp/abl

phi4_pretrain's recipe (batch 5760 x 4096, peak lr 3e-4, linear schedule, weight decay 0.1,
RoPE 10K, FSDP, full remat) with the `ablation_7b` preset (7.80B parameters; the paper does
not give the ablation model's shape or batch: the same recipe at 7B is this project's choice)
and 1T tokens (data_mixtures/ablations.py TOTAL_TOKENS; train.steps derived: 42,385).

Args: `mixture=VARIANT` (default table5), one of data_mixtures.ablations.VARIANTS: table5,
uniform, more_web, synthetic_heavy, synthetic_only; `smoke` shrinks to the tiny model on the
embedded corpus under the variant's weights (`ablation_smoke_<variant>`, registered by
data_mixtures: its five roles stand in for Table 5's sources), so smoke runs of two variants
differ by their mixture only.

`sweep()` lists every variant's experiment spec, for a sweep launcher or a notebook:

    for spec in sweep():    # 'ablation_7b_1t:mixture=table5', ...
        config = experiments.get_config(spec)
"""

from __future__ import annotations

from data_mixtures import ablations
from experiments import phi4_pretrain
from experiments.base import parse_arg, shrink, token_budget

NAME = "ablation_7b_1t"


def get_config(arg: str | None = None):
    args = parse_arg(arg, smoke=False, mixture="table5")
    c = phi4_pretrain.get_config()
    c.name = NAME
    c.model.preset = "ablation_7b"
    c.data.mixture = ablations.module(args.mixture)
    token_budget(c, ablations.TOTAL_TOKENS)
    if args.smoke:
        shrink(c, mixture=ablations.smoke_name(args.mixture))
    return c


def sweep(arg: str | None = None) -> list[str]:
    """Experiment specs, one per mixture variant; `arg` (e.g. 'smoke') is added to each."""
    extra = f",{arg}" if arg else ""
    return [f"{NAME}:mixture={variant}{extra}" for variant in ablations.VARIANTS]
