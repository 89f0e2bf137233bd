"""Command lines of the launchers: absl flags with an `--exp` experiment and `--exp.a.b=v`
overrides, under the project's convention (phi4_jax/cli.py): `--help` prints usage, every flag
with its default and an example; a user error is one line and exit status 2.

    values = exp_flags.parse(argv, prog="python -m launch.local", doc=__doc__,
                             define=lambda v: flags.DEFINE_string("workdir", None, "...",
                                                                  flag_values=v),
                             example="python -m launch.local --exp=tiny_pretrain --workdir=D")

`--reproduce=WORKDIR[@N]` replaces `--exp`: the experiment is the resolved config recorded in
WORKDIR/runs.jsonl (`phi4_jax.runs.reproduce`; `--exp.FIELD=VALUE` overrides still apply on
top); `record_command` then warns about what differs from the record (`--strict`: refuses).
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


def reproduce_spec(argv: Sequence[str]) -> str | None:
    """The value of `--reproduce=SPEC` / `--reproduce SPEC`, if given."""
    for i, arg in enumerate(argv):
        if arg.startswith("--reproduce="):
            return arg[len("--reproduce="):]
        if arg == "--reproduce" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _recorded_config(spec: str) -> ConfigDict:
    from phi4_jax.runs import reproduce

    return reproduce.experiment_config(reproduce.load(spec))


def define_exp(values: flags.FlagValues, argv: Sequence[str]) -> None:
    """--exp (an experiment file; with --reproduce, the recorded config), --reproduce, --strict."""
    spec = reproduce_spec(argv)
    if spec:
        config_flags.DEFINE_config_dict("exp", _recorded_config(spec), "the recorded config",
                                        flag_values=values, sys_argv=list(argv))
    else:
        config_flags.DEFINE_config_file("exp", None, "experiment NAME[:ARG] or config file path",
                                        flag_values=values, sys_argv=list(argv))
    flags.DEFINE_string("reproduce", None, "rerun a run from its record instead of --exp: "
                        "WORKDIR (its newest launch) or WORKDIR@N (the N-th, as `python -m "
                        "phi4_jax.runs show WORKDIR` numbers them)", flag_values=values)
    flags.DEFINE_bool("strict", False, "with --reproduce: refuse (exit 2) when the code, package "
                      "versions or input fingerprints differ from the record", flag_values=values)


def record_command(values: flags.FlagValues, argv: Sequence[str], prog: str) -> None:
    """Tells the run record how this launch was called; with --reproduce, first warns about
    each difference from the record (--strict: a UsageError naming them, before any work)."""
    from phi4_jax import runs
    from phi4_jax.runs import reproduce

    module = prog.removeprefix("python -m ")
    source = None
    if values.reproduce:
        record = reproduce.load(values.reproduce)
        reproduce.check(values.reproduce, record, values.exp, strict=values.strict, prog=prog,
                        stores=_stores_now(values.exp))
        source = reproduce.source_ref(values.reproduce, record)
    runs.set_command(cli.strip_debug(argv), module=module, reproduced_from=source)


def _stores_now(config: ConfigDict) -> dict:
    """The token stores a run of `config` would read here, now (verified in samples)."""
    from phi4_jax.data.pipeline import mixture_stores

    data = config.get("data") or {}
    try:
        return mixture_stores(data)
    except Exception as e:  # noqa: BLE001 - e.g. a mixture that no longer loads: a difference
        return {"(mixture)": {"fingerprint": None, "error": f"{type(e).__name__}: {e}"}}


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
          "any field of it (or of the --reproduce record's config)")
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
    spec, reproduce = _exp_spec(argv), reproduce_spec(argv)
    if reproduce == "":
        raise cli.UsageError("--reproduce needs a work dir: --reproduce=WORKDIR[@N]")
    if reproduce is not None and spec is not None:
        raise cli.UsageError("--reproduce and --exp: give one (--reproduce reruns the recorded "
                             "config; --exp.FIELD=VALUE overrides fields of it)")
    if reproduce is not None:
        check_overrides(argv, _recorded_config(reproduce))
    elif spec is not None:
        check_overrides(argv, _load_config(spec))
    values = flags.FlagValues()
    define(values, argv)
    try:
        values(argv)
    except flags.Error as e:
        raise cli.UsageError(str(e).replace("\n", " ")) from e
    if values.exp is None:
        raise cli.UsageError(f"--exp is required (or --reproduce=WORKDIR[@N]): {usage}; "
                             "experiments: " + ", ".join(experiments.names()))
    if getattr(values, "strict", False) and not values.reproduce:
        raise cli.UsageError("--strict applies to --reproduce=WORKDIR[@N] runs only")
    return values


def configure_logging() -> None:
    """INFO from phi4_jax, warnings from everything else (orbax is chatty at INFO)."""
    import logging

    from absl import logging as absl_logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("phi4_jax").setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.WARNING)
