"""Command lines of the launchers: absl flags with an `--exp` experiment and `--exp.a.b=v`
overrides, under the project's convention (phi4_jax/cli.py): `--help` prints usage, every flag
with its default and an example; a user error is one line and exit status 2.

    values = exp_flags.parse(argv, prog="python -m launch.local", doc=__doc__,
                             define=lambda v: flags.DEFINE_string("workdir", None, "...",
                                                                  flag_values=v),
                             example="python -m launch.local --exp=tiny_pretrain --workdir=D")
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence

from absl import flags
from ml_collections import ConfigDict, config_flags

import experiments
from phi4_jax import cli

HELP_FLAGS = ("--help", "-h", "--helpfull", "-help")


def resolve_exp_flag(argv: Sequence[str]) -> list[str]:
    """Rewrites `--exp=NAME[:ARG]` / `--exp NAME` to the experiment module's file path."""
    out, args = [], list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--exp="):
            arg = "--exp=" + _config_path(arg[len("--exp="):])
        elif arg == "--exp" and i + 1 < len(args):
            out.append(arg)
            i += 1
            arg = _config_path(args[i])
        out.append(arg)
        i += 1
    return out


def _config_path(spec: str) -> str:
    try:
        return experiments.config_path(spec)
    except ValueError as e:
        raise cli.UsageError(f"{e}; or give a path to a config file") from None


def _exp_spec(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--exp="):
            return arg[len("--exp="):]
        if arg == "--exp" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _load_config(path_spec: str) -> ConfigDict:
    """The experiment's ConfigDict, loaded as config_flags loads it (file path[:ARG])."""
    path, _, arg = path_spec.partition(":")
    if not os.path.isfile(path):
        raise cli.UsageError(f"--exp: no config file {path}")
    module = config_flags.config_flags._LoadConfigModule("exp", path)  # noqa: SLF001
    return module.get_config(arg) if arg else module.get_config()


def check_overrides(argv: Sequence[str], config: ConfigDict) -> None:
    """Every `--exp.a.b=v` names a field of the config; else one line with the close names."""
    for arg in argv:
        if not arg.startswith("--exp."):
            continue
        dotted = arg[len("--exp."):].split("=", 1)[0]
        node, walked = config, []
        for part in dotted.split("."):
            if not isinstance(node, ConfigDict) or part not in node:
                where = ".".join(walked) or "the experiment"
                known = sorted(node.keys()) if isinstance(node, ConfigDict) else []
                close = difflib.get_close_matches(part, known, n=1)
                hint = (f'did you mean "{".".join([*walked, close[0]])}"? ' if close else "")
                raise cli.UsageError(
                    f"--exp.{dotted}: {where} has no field {part!r}; {hint}known fields of "
                    f"{where}: {', '.join(known)}")
            node, walked = node[part], [*walked, part]


def _print_help(values: flags.FlagValues, prog: str, doc: str | None, usage: str,
                example: str) -> None:
    print(f"usage: {prog} {usage}\n")
    if doc:
        print(doc.strip() + "\n")
    print("flags:")
    for flag in sorted(values._flags().values(), key=lambda f: f.name):  # noqa: SLF001
        if flag.name == "exp" or "." in flag.name:
            continue
        default = "" if flag.default is None else f" (default: {flag.default_as_str})"
        print(f"  --{flag.name}: {flag.help}{default}")
    print("  --exp: experiment NAME[:ARG] or config file path; --exp.FIELD=VALUE overrides "
          "any field of it")
    print(f"  --debug: show tracebacks of user errors (also: {cli.DEBUG_ENV}=1)")
    print("\nexperiments: " + ", ".join(experiments.names()))
    print(f"\nexample:\n  {example}")


def parse(argv: Sequence[str], *, prog: str, doc: str | None, usage: str, example: str,
          define: Callable[[flags.FlagValues, Sequence[str]], None]) -> flags.FlagValues:
    """Flags from a command line (argv[0] is the program); `--help` prints and exits 0."""
    argv = cli.strip_debug(argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        values = flags.FlagValues()
        define(values, [argv[0]])
        _print_help(values, prog, doc, usage, example)
        raise SystemExit(0)
    argv = resolve_exp_flag(argv)
    spec = _exp_spec(argv)
    if spec is not None:
        check_overrides(argv, _load_config(spec))
    values = flags.FlagValues()
    define(values, argv)
    try:
        values(argv)
    except flags.Error as e:
        raise cli.UsageError(str(e).replace("\n", " ")) from e
    if values.exp is None:
        raise cli.UsageError(f"--exp is required: {usage}; experiments: "
                             + ", ".join(experiments.names()))
    return values


def configure_logging() -> None:
    """INFO from phi4_jax, warnings from everything else (orbax is chatty at INFO)."""
    import logging

    from absl import logging as absl_logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("phi4_jax").setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.WARNING)
