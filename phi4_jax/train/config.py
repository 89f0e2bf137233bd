"""The typed run config: an experiment's ConfigDict converted once, checked field by field.

    run = RunConfig.from_experiment(experiments.get_config("tiny_pretrain"))
    run.train.steps, run.data.seq_len, run.model.num_layers, run.section("dpo").beta

Experiments stay ml_collections ConfigDicts (experiments/*.py, `--exp.a.b=v` overrides); the
library receives only these frozen sections. Each section is a dataclass beside its consumer or
here (`OptimizerConfig`: train/optimizer.py; an objective's own section, e.g. `DPOConfig`:
registered with the objective, train/objectives.py; the model section becomes a
`phi4_jax.model.ModelConfig`). Fields have no defaults: every default lives once, in
experiments/base.py. The converter rejects a key no field names (listing the known keys), a
missing key, and a value of the wrong type (naming the field), before anything compiles. A
registered objective's section is required only when it is the run's objective (base.py has
`dpo` for every run; an objective registered elsewhere brings its own).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from phi4_jax.model import ModelConfig
from phi4_jax.model.config import from_experiment as model_from_experiment
from phi4_jax.train import objectives
from phi4_jax.train.optimizer import OptimizerConfig


class ConfigError(ValueError):
    """An experiment config that does not match the schema (names the field)."""


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The `mesh` section (phi4_jax.sharding.mesh.from_config, rules.from_config)."""

    ici: Mapping[str, int]  # sizes of data / fsdp / tensor inside a slice; -1 = the rest
    dcn: Mapping[str, int]  # sizes across slices; -1 = the rest
    rules: str  # a table of phi4_jax.sharding.rules.TABLES
    rule_overrides: Mapping[str, str | None]  # logical name -> mesh axes ('' replicates)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The `data` section (the objective's input builder; phi4_jax.data.pipeline)."""

    source: str  # what the objective reads: 'mixture', 'synthetic', 'pairs' (DPO)
    mixture: str  # 'embedded', a data_mixtures/ name or a mixture file
    seq_len: int  # positions per row
    seed: int  # the data order's seed
    cache_dir: str | None  # where on-demand stores (the embedded corpus) are built
    data_root: str | None  # where a mixture's relative store paths live


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The `train` section (the loop, the step, the objectives)."""

    steps: int  # optimizer steps of the whole run (a resumed run continues to it)
    global_batch: int  # sequences (rows) per step over all hosts
    micro_batches: int  # gradient accumulation; 1 or what per_device_batch implies
    per_device_batch: int | None  # rows per device per micro-step; None: use micro_batches
    checkpoint_every: int  # steps between checkpoints (and one at the end)
    keep: int  # newest checkpoints kept
    log_every: int  # steps between console / TensorBoard lines
    seed: int  # parameter init and the step's PRNG
    init_from: str | None  # another run's parameters to start from (fresh optimizer)
    reference_from: str | None  # another run's parameters for the objective's frozen state
    z_loss: float  # next_token: weight of the lse^2 term
    clip_norm: float | None  # global gradient-norm clip (> 0); None: no clipping
    max_nonfinite_in_row: int  # NaN/Inf steps in a row before the run aborts
    loss_vocab_chunks: int  # vocabulary slices the loss projects onto at a time
    async_checkpoint: bool  # save in the background
    peak_flops: float | None  # for MFU; None: the device table (measured on CPU)
    lease_timeout_s: float  # a work dir lease whose heartbeat is older is reclaimable

    def __post_init__(self) -> None:
        for name in ("steps", "global_batch", "micro_batches", "checkpoint_every", "keep",
                     "log_every", "max_nonfinite_in_row", "loss_vocab_chunks"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be positive")
        if self.per_device_batch is not None and self.per_device_batch <= 0:
            raise ConfigError(f"train.per_device_batch={self.per_device_batch} must be positive "
                              "(None: use train.micro_batches)")
        check_number("train.z_loss", self.z_loss, minimum=0.0)
        check_number("train.clip_norm", self.clip_norm, minimum=0.0, strict=True,
                     none="None: no clipping")
        check_number("train.peak_flops", self.peak_flops, minimum=0.0, strict=True,
                     none="None: the device table")
        check_number("train.lease_timeout_s", self.lease_timeout_s, minimum=0.0, strict=True)


def check_number(where: str, value: float | None, *, minimum: float | None = None,
                 maximum: float | None = None, strict: bool = False,
                 strict_max: bool = False, none: str | None = None) -> None:
    """ConfigError naming `where` unless `value` is finite and within the bounds (`strict`:
    above the minimum, `strict_max`: below the maximum); None passes when `none` says what it
    means."""
    if value is None and none is not None:
        return
    low = "" if minimum is None else f"{'>' if strict else '>='} {minimum:g}"
    high = "" if maximum is None else f"{'<' if strict_max else '<='} {maximum:g}"
    wanted = " and ".join(filter(None, (low, high))) or "finite"
    hint = f" ({none})" if none else ""
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{where}={value!r} must be a finite number {wanted}{hint}")
    if minimum is not None and (value < minimum or strict and value == minimum) or \
            maximum is not None and (value > maximum or strict_max and value == maximum):
        raise ConfigError(f"{where}={value!r} must be {wanted}{hint}")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """The `log` section (phi4_jax.train.metrics.MetricLogger)."""

    tensorboard: bool  # write WORKDIR/tensorboard
    wandb: bool  # log to Weights & Biases when installed
    wandb_project: str  # its project


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The `eval` section (phi4_jax.train.evaluation): evaluation during training."""

    every: int  # steps between evaluations (and at train.steps); 0: never
    heldout_rows: int  # held-out rows of data.seq_len per source (0: no held-out loss)
    batch_size: int  # held-out rows per eval batch (divides heldout_rows)
    tasks: tuple[str, ...]  # phi4_jax.eval task specs (e.g. 'mc:PATH.jsonl') on the live model
    task_limit: int | None  # first N examples of each task; None: all
    task_batch_size: int  # rows per scoring batch of the tasks

    def __post_init__(self) -> None:
        for name in ("every", "heldout_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name}={getattr(self, name)} must be >= 0")
        for name in ("batch_size", "task_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"eval.{name}={getattr(self, name)} must be positive")
        if self.heldout_rows % self.batch_size:
            raise ConfigError(f"eval.heldout_rows={self.heldout_rows} is not a multiple of "
                              f"eval.batch_size={self.batch_size}")
        if self.task_limit is not None and self.task_limit <= 0:
            raise ConfigError(f"eval.task_limit={self.task_limit} must be positive (None: all)")
        if self.every and not (self.heldout_rows or self.tasks):
            raise ConfigError(f"eval.every={self.every} but there is nothing to evaluate: set "
                              "eval.heldout_rows and/or eval.tasks (or eval.every=0)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole experiment, typed. `sections` holds the registered objectives' own sections."""

    name: str
    objective: str  # a registered objective (phi4_jax.train.objectives.names())
    model: ModelConfig
    mesh: MeshConfig
    data: DataConfig
    optimizer: OptimizerConfig
    train: TrainConfig
    log: LogConfig
    eval: EvalConfig
    sections: Mapping[str, Any]  # objective section key -> its dataclass, those present
    experiment: Mapping[str, Any]  # the experiment as JSON (config.json, checkpoints, W&B)

    def section(self, key: str) -> Any:
        if key not in self.sections:
            raise ConfigError(f"the config has no {key!r} section; sections: "
                              f"{sorted(self.sections)}")
        return self.sections[key]

    @classmethod
    def of(cls, config: Any) -> RunConfig:
        """`config` itself if already typed, else `from_experiment(config)`."""
        return config if isinstance(config, cls) else cls.from_experiment(config)

    @classmethod
    def from_experiment(cls, config: Any) -> RunConfig:
        """Converts an experiment ConfigDict (or a nested dict of the same keys)."""
        raw = _plain(config)
        if not isinstance(raw, Mapping):
            raise ConfigError(f"an experiment config is a ConfigDict, got {type(config)}")
        experiment = json.loads(config.to_json_best_effort()) if hasattr(
            config, "to_json_best_effort") else json.loads(json.dumps(raw, default=str))
        extra = objectives.sections()
        core = {"name": str, "objective": str, "model": ModelConfig, "mesh": MeshConfig,
                "data": DataConfig, "optimizer": OptimizerConfig, "train": TrainConfig,
                "log": LogConfig, "eval": EvalConfig}
        objective = coerce(raw.get("objective"), str, "objective")
        if objective not in objectives.names():
            raise ConfigError(f"objective={objective!r} is not registered; objectives: "
                              f"{objectives.names()}")
        # An objective's own section is required when it is the run's objective; another
        # registered objective's section may be present (base.py has `dpo`) and is checked.
        optional = [k for k in extra if k != objective and k not in raw]
        _check_keys(raw, [k for k in [*core, *extra] if k not in optional],
                    "the experiment config", known=[*core, *extra])
        run = cls(name=coerce(raw["name"], str, "name"), objective=objective,
                   model=model_section(raw["model"]),
                   mesh=to_section(MeshConfig, raw["mesh"], "mesh"),
                   data=to_section(DataConfig, raw["data"], "data"),
                   optimizer=to_section(OptimizerConfig, raw["optimizer"], "optimizer"),
                   train=to_section(TrainConfig, raw["train"], "train"),
                   log=to_section(LogConfig, raw["log"], "log"),
                   eval=to_section(EvalConfig, raw["eval"], "eval"),
                   sections={k: to_section(c, raw[k], k) for k, c in extra.items()
                             if k in raw},
                   experiment=experiment)
        run.optimizer.check_schedule(run.train.steps)
        return run


def _plain(value: Any) -> Any:
    """ConfigDicts (field references resolved) and mappings -> nested dicts."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_keys(raw: Any, required: list[str], where: str, known: list[str] | None = None
                ) -> None:
    """Every key of `raw` in `known` (default: `required`), every `required` key present."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a section (a ConfigDict), got {raw!r}")
    known = required if known is None else known
    unknown = sorted(set(raw) - set(known))
    if unknown:
        prefix = "" if where == "the experiment config" else f"{where}."
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} in {where}; the known keys "
                          f"are {sorted(known)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ConfigError(f"{where} lacks {missing} (experiments/base.py has every default)")


def to_section(cls: type, raw: Any, where: str) -> Any:
    """The dataclass `cls` from a section's values: every key a field, every field typed."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    _check_keys(raw, fields, where)
    try:
        return cls(**{f: coerce(raw[f], hints[f], f"{where}.{f}") for f in fields})
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def model_section(raw: Any) -> ModelConfig:
    """The `model` section: `preset` plus every ModelConfig field (None: the preset's)."""
    hints = typing.get_type_hints(ModelConfig)
    fields = ["preset", *(f.name for f in dataclasses.fields(ModelConfig))]
    _check_keys(raw, fields, "model")
    values = {"preset": coerce(raw["preset"], str, "model.preset")}
    values.update({f: coerce(raw[f], hints[f] | None, f"model.{f}") for f in fields[1:]})
    return model_from_experiment(values)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` as type `hint` (int, float, str, bool, X | None, tuple[X, ...], Mapping[K, V]);
    ints pass as floats, nothing else converts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return coerce(value, option, where)
            except ConfigError:
                pass
        return coerce(value, options[-1], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r}: expected a tuple")
        return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}={value!r}: expected a section of {args[1]}")
        return {coerce(k, args[0], where): coerce(v, args[1], f"{where}.{k}")
                for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and (
            hint is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}={value!r}: expected {getattr(hint, '__name__', hint)}, got "
                      f"{type(value).__name__}")
