"""Runs an experiment on this machine's devices; the same workdir resumes.

    python -m launch.local --exp=tiny_pretrain --workdir=workdirs/tiny
    python -m launch.local --exp=tiny_pretrain --workdir=/tmp/t --exp.train.steps=20 \\
        --exp.train.checkpoint_every=5 --exp.data.source=synthetic

    python -m launch.local --reproduce=workdirs/tiny --workdir=workdirs/tiny_again --strict

--exp takes an experiment name (a module in experiments/), NAME:ARG, or a path to a config
file; any config field can be overridden as --exp.FIELD=VALUE. --reproduce=WORKDIR[@N] reruns
the resolved config recorded in WORKDIR/runs.jsonl (its newest launch, or the N-th) and warns
about each difference in code, packages or input data (--strict: refuses, exit 2). Every
launch appends its run record to WORKDIR/runs.jsonl (`python -m phi4_jax.runs show WORKDIR`).
On a CPU-only host that has libtpu installed, set JAX_PLATFORMS=cpu to skip the TPU probe.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

import data_mixtures  # noqa: F401 (registers the mixture names that data.mixture may give)
from launch import exp_flags
from phi4_jax import cli

PROG = "python -m launch.local"
USAGE = ("--exp=NAME[:ARG] --workdir=DIR [--exp.FIELD=VALUE ...] | --reproduce=WORKDIR[@N] "
         "--workdir=NEW [--strict] [--exp.FIELD=VALUE ...]")
EXAMPLE = "python -m launch.local --exp=tiny_pretrain --workdir=workdirs/tiny --exp.train.steps=20"
resolve_exp_flag = exp_flags.resolve_exp_flag


def define_flags(values: flags.FlagValues, argv: Sequence[str]) -> None:
    exp_flags.define_exp(values, argv)  # --exp, --reproduce=WORKDIR[@N], --strict
    flags.DEFINE_string("workdir", None, "checkpoints, logs and metrics go here (required)",
                        flag_values=values)


def parse_values(argv: Sequence[str]) -> flags.FlagValues:
    """The flags of a command line (argv[0] is the program); --workdir checked."""
    values = exp_flags.parse(argv, prog=PROG, doc=__doc__, usage=USAGE, example=EXAMPLE,
                             define=define_flags)
    if not values.workdir:
        raise cli.UsageError(f"--workdir is required: {PROG} {USAGE}")
    return values


def parse(argv: Sequence[str]) -> tuple[object, str]:
    """(config with overrides applied, workdir) from a command line (argv[0] is the program)."""
    values = parse_values(argv)
    return values.exp, values.workdir


def main(argv: Sequence[str] | None = None):
    argv = sys.argv if argv is None else argv
    values = parse_values(argv)
    config, workdir = values.exp, values.workdir
    exp_flags.configure_logging()
    exp_flags.record_command(values, argv, PROG)  # --reproduce: warn (--strict: refuse) first

    from phi4_jax.train import loop  # imports jax: after flags, so --help stays fast

    if config.get("eval") and config.eval.tasks:  # the harness scores eval.tasks in training
        from phi4_jax.eval.in_training import task_scorer
        from phi4_jax.train import evaluation

        evaluation.register_task_scorer(task_scorer)
    return loop.run(config, workdir)


def _entry(args: Sequence[str]) -> int:
    main([sys.argv[0], *args])
    return 0


if __name__ == "__main__":
    # A ValueError out of the library is a config it rejected, named by field (loop.build).
    cli.run(_entry, prog=PROG, user_errors=(ValueError,))
