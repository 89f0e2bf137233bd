"""The experiment schema and its defaults: every phase (pretrain, midtrain, SFT, DPO, ablations)
starts from `base_config()` and changes only what differs. Each default lives here, once.

Sections (override any field on the command line: `--exp.train.steps=20`):

    name            the experiment's name (logs, W&B)
    objective       'next_token' (pretrain / midtrain / SFT); DPO objectives plug in later
    model           preset: a name in phi4_jax.model.PRESETS; every ModelConfig field is also
                    present, None meaning "the preset's value" (--exp.model.remat=full)
    mesh            ici / dcn: sizes of data, fsdp, tensor inside a slice / across slices, -1 =
                    the rest (multi-slice: DCN on data). rules: a table in
                    phi4_jax.sharding.rules.TABLES; rule_overrides.NAME: mesh axes for one
                    logical name ('' replicates, 'data,fsdp' uses two axes, None keeps the table)
    data            source: 'mixture' (the data engine) or 'synthetic'; mixture: a module in
                    data_mixtures/ or 'embedded'; seq_len; seed; cache_dir / data_root: where
                    token stores live
    optimizer       AdamW and its schedule (phi4_jax/train/optimizer.py has the formula)
    train           steps, global_batch (sequences), micro_batches (gradient accumulation),
                    checkpoint_every, keep, log_every, seed, init_from (another phase's workdir
                    or checkpoint), z_loss, clip_norm, max_nonfinite_in_row (NaN policy),
                    loss_vocab_chunks (vocabulary slices the loss projects onto at a time),
                    async_checkpoint, peak_flops
    log             tensorboard, wandb (used only when installed), wandb_project

Defaults follow the Phi-4 report where it states a value (peak lr 3e-4, weight decay 0.1, global
batch 5760 x 4096 tokens, ~10T tokens); the rest are marked "not stated" below.
"""

from __future__ import annotations

import dataclasses

from ml_collections import config_dict

from phi4_jax.model import ModelConfig
from phi4_jax.sharding.axes import VOCABULARY

_PLACEHOLDER_TYPES = {"int | None": int, "int": int, "float": float, "str": str, "bool": bool}


def model_section(preset: str) -> config_dict.ConfigDict:
    """`preset` plus a None placeholder, typed for command-line overrides, per ModelConfig field."""
    section = {"preset": preset}
    for f in dataclasses.fields(ModelConfig):
        section[f.name] = config_dict.placeholder(_PLACEHOLDER_TYPES[str(f.type)])
    return config_dict.ConfigDict(section)


def base_config() -> config_dict.ConfigDict:
    c = config_dict.ConfigDict()
    c.name = "base"
    c.objective = "next_token"
    c.model = model_section("phi4_14b")
    c.mesh = config_dict.ConfigDict({
        "ici": {"data": 1, "fsdp": -1, "tensor": 1},
        "dcn": {"data": -1, "fsdp": 1, "tensor": 1},
        "rules": "fsdp",
        "rule_overrides": {name: config_dict.placeholder(str) for name in VOCABULARY},
    })
    c.data = config_dict.ConfigDict({
        "source": "mixture",
        "mixture": "phi4_pretrain",
        "seq_len": 4096,
        "seed": 0,
        "cache_dir": config_dict.placeholder(str),
        "data_root": config_dict.placeholder(str),
    })
    c.optimizer = config_dict.ConfigDict({
        "name": "adamw",
        "peak_lr": 3e-4,
        "warmup_steps": 5000,  # not stated
        "decay_steps": config_dict.placeholder(int),  # None: decay over train.steps
        "min_lr_ratio": 0.1,  # the floor; not stated
        "b1": 0.9,  # not stated
        "b2": 0.95,  # not stated
        "eps": 1e-8,
        "weight_decay": 0.1,
        "decay_exclude": ("norm",),  # regexes on parameter paths: RMSNorm scales
    })
    c.train = config_dict.ConfigDict({
        "steps": 423_855,  # ~10T tokens / (5760 x 4096) tokens per step
        "global_batch": 5760,
        "micro_batches": 1,
        "checkpoint_every": 1000,
        "keep": 3,
        "log_every": 10,
        "seed": 0,
        "init_from": config_dict.placeholder(str),
        "z_loss": 0.0,  # not stated; 1e-4 is PaLM's
        "clip_norm": 1.0,  # not stated
        "max_nonfinite_in_row": 5,
        "loss_vocab_chunks": 8,  # 100352 / 8 = 12544 logits per token per slice
        "async_checkpoint": True,
        "peak_flops": config_dict.placeholder(float),  # None: device table, measured on CPU
    })
    c.log = config_dict.ConfigDict({"tensorboard": True, "wandb": False,
                                    "wandb_project": "phi4-jax"})
    return c
