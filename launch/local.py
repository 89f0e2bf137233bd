"""Runs an experiment on this machine's devices; the same workdir resumes.

    python -m launch.local --exp=tiny_pretrain --workdir=workdirs/tiny
    python -m launch.local --exp=tiny_pretrain --workdir=/tmp/t --exp.train.steps=20 \\
        --exp.train.checkpoint_every=5 --exp.data.source=synthetic

--exp takes an experiment name (a module in experiments/), NAME:ARG, or a path to a config
file; any config field can be overridden as --exp.FIELD=VALUE. On a CPU-only host that has
libtpu installed, set JAX_PLATFORMS=cpu to skip the TPU probe.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

import data_mixtures  # noqa: F401 (registers the mixture names that data.mixture may give)
import experiments


def resolve_exp_flag(argv: Sequence[str]) -> list[str]:
    """Rewrites `--exp=NAME[:ARG]` / `--exp NAME` to the experiment module's file path."""
    out, args = [], list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--exp="):
            arg = "--exp=" + experiments.config_path(arg[len("--exp="):])
        elif arg == "--exp" and i + 1 < len(args):
            out.append(arg)
            i += 1
            arg = experiments.config_path(args[i])
        out.append(arg)
        i += 1
    return out


def parse(argv: Sequence[str]) -> tuple[object, str]:
    """(config with overrides applied, workdir) from a command line (argv[0] is the program)."""
    argv = resolve_exp_flag(argv)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("exp", None, "experiment NAME[:ARG] or config file path",
                                    flag_values=values, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "checkpoints, logs and metrics go here",
                        flag_values=values)
    values(argv)
    if values.exp is None or not values.workdir:
        raise SystemExit("usage: python -m launch.local --exp=NAME --workdir=DIR "
                         "[--exp.FIELD=VALUE ...]; experiments: " + ", ".join(experiments.names()))
    return values.exp, values.workdir


def main(argv: Sequence[str] | None = None):
    config, workdir = parse(sys.argv if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("phi4_jax").setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO

    from phi4_jax.train import loop  # imports jax: after flags, so --help stays fast

    return loop.run(config, workdir)


if __name__ == "__main__":
    main()
