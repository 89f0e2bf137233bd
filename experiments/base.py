"""The experiment schema and its defaults: every phase (pretrain, midtrain, SFT, DPO, ablations)
starts from `base_config()` and changes only what differs. Each default lives here, once.

Sections (override any field on the command line: `--exp.train.steps=20`):

    name            the experiment's name (logs, W&B)
    objective       'next_token' (pretrain / midtrain / SFT) or 'dpo' (with data.source='pairs')
    model           preset: a name in phi4_jax.model.PRESETS; every ModelConfig field is also
                    present, None meaning "the preset's value" (--exp.model.remat=full)
    mesh            ici / dcn: sizes of data, fsdp, tensor inside a slice / across slices, -1 =
                    the rest (multi-slice: DCN on data). rules: a table in
                    phi4_jax.sharding.rules.TABLES; rule_overrides.NAME: mesh axes for one
                    logical name ('' replicates, 'data,fsdp' uses two axes, None keeps the table)
    data            source: 'mixture' (the data engine), 'synthetic' or 'pairs' (DPO: the
                    files of dpo.pairs); mixture: a module in
                    data_mixtures/ or 'embedded'; seq_len; seed; cache_dir / data_root: where
                    token stores live
    optimizer       AdamW and its schedule (phi4_jax/train/optimizer.py has the formula)
    train           steps, global_batch (sequences), micro_batches (gradient accumulation) or
                    per_device_batch (sequences per device per micro-step: micro_batches is
                    then global_batch / (batch-sharded devices x per_device_batch), exactly),
                    checkpoint_every, keep, log_every, seed, init_from (another phase's workdir
                    or checkpoint), reference_from (DPO reference checkpoint), z_loss,
                    clip_norm, max_nonfinite_in_row (NaN policy),
                    loss_vocab_chunks (vocabulary slices the loss projects onto at a time),
                    async_checkpoint, peak_flops, lease_timeout_s (when another run may take
                    over a work dir whose run stopped sending heartbeats)
    dpo             pairs, loss, beta, label_smoothing, max_pairs_per_row, reference_cache,
                    cache_dir, tokenizer (phi4_jax/train/dpo/)
    log             tensorboard, wandb (used only when installed), wandb_project
    eval            evaluation during training (phi4_jax/train/evaluation.py): every (steps;
                    0: off), heldout_rows (per source, carved from its store or its held-out
                    store; never trained on), batch_size, tasks (phi4_jax.eval specs such as
                    'mc:PATH.jsonl', scored on the live model), task_limit, task_batch_size

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
        "per_device_batch": config_dict.placeholder(int),  # None: use micro_batches
        "checkpoint_every": 1000,
        "keep": 3,
        "log_every": 10,
        "seed": 0,
        "init_from": config_dict.placeholder(str),
        # The objective's frozen reference (DPO) from another run; None: the start parameters
        # (init_from, else the seed's init). With dpo.reference_cache it names the checkpoint
        # whose log-probs are cached.
        "reference_from": config_dict.placeholder(str),
        "z_loss": 0.0,  # not stated; 1e-4 is PaLM's
        "clip_norm": 1.0,  # not stated
        "max_nonfinite_in_row": 5,
        "loss_vocab_chunks": 8,  # 100352 / 8 = 12544 logits per token per slice
        "async_checkpoint": True,
        "peak_flops": config_dict.placeholder(float),  # None: device table, measured on CPU
        # A work dir's lease (one run at a time) whose heartbeat is older than this is taken
        # over by the next run; a holder that died on the same host is taken over at once.
        "lease_timeout_s": 600.0,
    })
    # DPO (objective='dpo', data.source='pairs'); phi4_jax/train/dpo/losses.py has the
    # formulas. The Phi-4 report states none of these: they are documented choices.
    c.dpo = config_dict.ConfigDict({
        "pairs": config_dict.placeholder(str),  # pair JSONL file(s), comma-separated
        "loss": "sigmoid",  # sigmoid | conservative | robust | ipo | hinge
        "beta": 0.1,  # Rafailov et al.'s and most open recipes' default
        "label_smoothing": 0.0,  # eps of conservative / robust
        "max_pairs_per_row": 16,  # packing: pairs per data.seq_len row, at most
        "reference_cache": True,  # reference log-probs computed once, on disk; else frozen params
        "cache_dir": config_dict.placeholder(str),  # None: WORKDIR/reference_cache
        "tokenizer": config_dict.placeholder(str),  # pairs of another tokenizer are skipped
    })
    c.log = config_dict.ConfigDict({"tensorboard": True, "wandb": False,
                                    "wandb_project": "phi4-jax"})
    c.eval = config_dict.ConfigDict({
        "every": 0,  # off; 0 < N: held-out loss (and tasks) every N steps and at the end
        # Rows of data.seq_len per source held out (0: none). Carving them changes what
        # training reads, so it is off unless asked for (docs/training.md).
        "heldout_rows": 0,
        "batch_size": 8,
        "tasks": (),
        "task_limit": config_dict.placeholder(int),  # None: every example
        "task_batch_size": 32,
    })
    return c


def parse_arg(arg: str | None, **defaults) -> config_dict.ConfigDict:
    """An experiment's arg string over typed defaults (big_vision style).

    `parse_arg("smoke,mixture=more_web", smoke=False, mixture="table5")` gives
    {smoke: True, mixture: 'more_web'}: a bare word sets a bool to True; values take the type of
    their default. Unknown keys raise, naming the known ones.
    """
    out = config_dict.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, has_value, value = (s.strip() for s in item.partition("="))
        if key not in defaults:
            raise ValueError(f"unknown experiment argument {key!r} in {arg!r}; arguments are "
                             f"{sorted(defaults)}")
        kind = type(defaults[key])
        if kind is bool:
            if has_value and value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"experiment argument {key}={value!r}: expected true or false")
            out[key] = not has_value or value.lower() in ("true", "1")
        else:
            out[key] = kind(value)
    return out


def token_budget(config: config_dict.ConfigDict, total_tokens: float) -> config_dict.ConfigDict:
    """train.steps = total_tokens // (train.global_batch x data.seq_len), kept as a lazy
    reference: overriding either field on the command line recomputes it, so the token budget
    stays fixed; an explicit --exp.train.steps=N replaces it."""
    tokens_per_step = config.train.get_ref("global_batch") * config.data.get_ref("seq_len")
    config.train.steps = int(total_tokens) // tokens_per_step
    return config


def scale_loss_chunks(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """train.loss_vocab_chunks scaled with data.seq_len from the base's (8 slices at 4096), so
    each float32 logits block per sequence stays the pretraining size (16K: 32 slices)."""
    defaults = base_config()
    config.train.loss_vocab_chunks = (defaults.train.loss_vocab_chunks
                                      * config.data.seq_len // defaults.data.seq_len)
    return config


# Model fields that set the size: `shrink` hands them back to the tiny preset.
_SIZE_FIELDS = ("num_layers", "embed_dim", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
                "vocab_size", "max_seq_len")
_LOGITS_BLOCK_BYTES = 256 * 2**20  # float32 logits per loss vocabulary slice on a CPU


def shrink(config: config_dict.ConfigDict, *, seq_len: int = 128, global_batch: int = 8,
           steps: int = 20, mixture: str = "embedded") -> config_dict.ConfigDict:
    """The experiment at smoke size: runs on a CPU in seconds to minutes (`--exp=NAME:smoke`).

    Replaced: the model's size (the `tiny` preset: 2 layers, width 128, the real vocabulary),
    float32 compute (XLA:CPU is slow in bfloat16), the mesh (base defaults: FSDP over local
    devices), the data (`mixture`, by default the embedded corpus; `seq_len`), the run length
    (`steps`, `global_batch`, no gradient accumulation, a checkpoint at the end), warm-up (a
    quarter of the steps at most) and the loss's vocabulary slices (float32 logits blocks of at
    most 256 MiB). Kept: everything else the experiment chose (objective, RoPE base, remat,
    rules, learning rate and schedule shape, weight decay, init_from...).
    """
    from phi4_jax.model import preset

    model = config.model
    model.preset = "tiny"
    for name in _SIZE_FIELDS:
        model[name] = None
    model.dtype = "float32"
    model.param_dtype = None
    defaults = base_config()
    config.mesh.ici = defaults.mesh.ici
    config.mesh.dcn = defaults.mesh.dcn
    config.data.source = "mixture"
    config.data.mixture = mixture
    config.data.seq_len = seq_len
    config.data.data_root = None
    config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, steps // 4)
    config.optimizer.decay_steps = None
    train = config.train
    train.steps = steps
    train.global_batch = global_batch
    train.micro_batches = 1
    train.per_device_batch = None
    train.checkpoint_every = steps
    train.log_every = 1
    vocab = preset("tiny").vocab_size
    logits = global_batch * seq_len * vocab * 4
    train.loss_vocab_chunks = min(n for n in range(1, vocab + 1)
                                  if vocab % n == 0 and logits / n <= _LOGITS_BLOCK_BYTES)
    config.log.wandb = False
    return config
