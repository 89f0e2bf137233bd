"""AdamW with the Phi-4 schedule: linear warm-up, linear decay to a floor, constant decay 0.1.

Schedule (step s counts applied updates, starting at 0):

    s <  W:          lr = peak * s / W
    W <= s <  E:     lr = peak + (floor - peak) * (s - W) / (E - W)
    s >= E:          lr = floor                    with floor = peak * min_lr_ratio

where W = warmup_steps and E = decay_end (the run's step count unless set); W > E is a config
error (`OptimizerConfig.check_schedule`), as is any value out of its range (a negative or NaN
learning rate or weight decay, b1 / b2 outside [0, 1), ...: `OptimizerConfig`, naming the
field). The paper states linear warm-up and linear decay with peak 3e-4; the floor is not stated
(we default to 10% of the peak).

Weight decay 0.1 is decoupled (AdamW) and constant. Parameters whose path matches any regular
expression in `decay_exclude` get no decay; the default excludes the RMSNorm scales (`*_norm/`),
as is usual for gains that multiply, rather than project, the residual stream. Embeddings and
the LM head are decayed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax


def schedule(peak_lr: float, warmup_steps: int, decay_end: int,
             min_lr_ratio: float) -> optax.Schedule:
    """The piecewise-linear schedule above, as an optax schedule of the update count."""
    if warmup_steps < 0 or decay_end < 0 or not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"optimizer.warmup_steps={warmup_steps} and the decay end "
                         f"{decay_end} must be >= 0, optimizer.min_lr_ratio={min_lr_ratio} in "
                         "[0, 1]")
    floor = peak_lr * min_lr_ratio
    warm = optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))
    decay = optax.linear_schedule(peak_lr, floor, max(decay_end - warmup_steps, 1))
    if warmup_steps == 0:
        return decay
    return optax.join_schedules([warm, decay], [warmup_steps])


def decay_mask(params: Any, exclude: Sequence[str]) -> Any:
    """True where weight decay applies: paths ('blocks/attn/q') matching no `exclude` pattern."""
    patterns = [re.compile(p) for p in exclude]

    def keep(path, _):
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        return not any(p.search(name) for p in patterns)

    return jax.tree_util.tree_map_with_path(keep, params)


def adamw(lr: optax.Schedule, *, b1: float, b2: float, eps: float, weight_decay: float,
          exclude: Sequence[str], clip_norm: float | None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the learning rate recorded in the state."""
    # `mask` is static: inject_hyperparams would otherwise call it as a schedule of the step.
    inner = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=lr, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
        mask=lambda params: decay_mask(params, exclude))
    clip = optax.clip_by_global_norm(clip_norm) if clip_norm else optax.identity()
    return optax.chain(clip, inner)


def applied_learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate the last update used (recorded by inject_hyperparams in the chain)."""
    for part in opt_state if isinstance(opt_state, tuple) else (opt_state,):
        hyperparams = getattr(part, "hyperparams", None)
        if hyperparams is not None and "learning_rate" in hyperparams:
            return jnp.asarray(hyperparams["learning_rate"], jnp.float32)
    raise ValueError("the optimizer state records no learning rate (use inject_hyperparams)")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The experiment's `optimizer` section (defaults: experiments/base.py)."""

    name: str  # 'adamw', the only one
    peak_lr: float  # the schedule's peak
    warmup_steps: int  # W: linear warm-up from 0
    decay_steps: int | None  # E: the decay's end; None: the run's train.steps
    min_lr_ratio: float  # floor = peak * min_lr_ratio
    b1: float  # Adam moments
    b2: float
    eps: float
    weight_decay: float  # decoupled, constant
    decay_exclude: tuple[str, ...]  # regexes on parameter paths that get no decay

    def __post_init__(self) -> None:
        """Every value in its range (ConfigError naming the field), before anything compiles."""
        from phi4_jax.train.config import ConfigError, check_number  # config imports this module

        if self.name != "adamw":
            raise ConfigError(f"optimizer.name={self.name!r}; only 'adamw' is implemented")
        check_number("optimizer.peak_lr", self.peak_lr, minimum=0.0)
        check_number("optimizer.min_lr_ratio", self.min_lr_ratio, minimum=0.0, maximum=1.0)
        check_number("optimizer.b1", self.b1, minimum=0.0, maximum=1.0, strict_max=True)
        check_number("optimizer.b2", self.b2, minimum=0.0, maximum=1.0, strict_max=True)
        check_number("optimizer.eps", self.eps, minimum=0.0, strict=True)
        check_number("optimizer.weight_decay", self.weight_decay, minimum=0.0)
        if self.warmup_steps < 0:
            raise ConfigError(f"optimizer.warmup_steps={self.warmup_steps} must be >= 0")
        if self.decay_steps is not None and self.decay_steps <= 0:
            raise ConfigError(f"optimizer.decay_steps={self.decay_steps} must be positive "
                              "(None: decay over train.steps)")
        for pattern in self.decay_exclude:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"optimizer.decay_exclude: {pattern!r} is not a regular "
                                  f"expression ({err})") from None

    def check_schedule(self, total_steps: int) -> None:
        """The warm-up ends by the decay's end (optimizer.decay_steps, else train.steps)."""
        from phi4_jax.train.config import ConfigError

        end, where = ((self.decay_steps, "optimizer.decay_steps") if self.decay_steps is not None
                      else (total_steps, "train.steps"))
        if self.warmup_steps > end:
            raise ConfigError(
                f"optimizer.warmup_steps={self.warmup_steps} is longer than {where}={end}: the "
                f"learning rate would never reach optimizer.peak_lr={self.peak_lr:g} nor decay; "
                f"set --exp.optimizer.warmup_steps to at most {end}")


def from_config(opt: OptimizerConfig, clip_norm: float | None, total_steps: int
                ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and its schedule from a run's `optimizer` section."""
    decay_end = opt.decay_steps if opt.decay_steps is not None else total_steps
    lr = schedule(opt.peak_lr, opt.warmup_steps, decay_end, opt.min_lr_ratio)
    tx = adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
               exclude=opt.decay_exclude, clip_norm=clip_norm)
    return tx, lr
