"""The command-line convention every `python -m` entry point of the project follows.

    parser = cli.parser("python -m phi4_jax.data.plan", __doc__,
                        example="python -m phi4_jax.data.plan data_mixtures/phi4_pretrain.py")
    parser.add_argument("--total_tokens", type=float, help="override the mixture's budget")
    ...
    if __name__ == "__main__":
        cli.run(main)                     # exit codes and error lines as below

Flags: `--snake_case=value` (or `--snake_case value`), the style of absl and of the launch
commands' `--exp.a.b=v` overrides, so one spelling works everywhere; hyphenated spellings that
were documented earlier stay as aliases (`cli.flag_names("n_samples")` gives both).

Exit codes: 0 success; 2 a user error (unknown experiment, bad override, missing file, bad
value): one line `PROG: error: WHAT (WHAT WOULD BE RIGHT)` on stderr, no traceback; 1 an
internal failure, with its traceback. `--debug` (or PHI4_JAX_DEBUG=1) shows the traceback of a
user error too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

DEBUG_ENV = "PHI4_JAX_DEBUG"


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit status 2."""


def debug_requested(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def strip_debug(argv: Sequence[str]) -> list[str]:
    return [a for a in argv if a != "--debug"]


def flag_names(name: str, *, alias: bool = True) -> list[str]:
    """`--snake_case` plus, for names with underscores, the old `--hyphen-case` alias."""
    names = [f"--{name}"]
    if alias and "_" in name:
        names.append(f"--{name.replace('_', '-')}")
    return names


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout and appends each flag's default to its help line."""


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions: errors are UsageErrors (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def parser(prog: str, doc: str | None, *, example: str, **kwargs: Any) -> Parser:
    """An argument parser whose usage names the real `python -m` command, whose help shows every
    flag with its default, and whose epilog gives an example command."""
    p = Parser(prog=prog, description=(doc or "").strip() or None,
               epilog=f"example:\n  {example}", formatter_class=_Formatter, **kwargs)
    p.add_argument("--debug", action="store_true", default=False,
                   help=f"show tracebacks of user errors (also: {DEBUG_ENV}=1)")
    return p


def fail(prog: str, message: str) -> NoReturn:
    """Prints the one-line user error and exits 2."""
    line = " ".join(str(message).split())  # a message never spans lines
    print(f"{prog}: error: {line}", file=sys.stderr)
    raise SystemExit(2)


def run(main: Callable[[Sequence[str]], Any], argv: Sequence[str] | None = None, *,
        prog: str | None = None, user_errors: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """Runs `main(argv)` as an entry point: exit 0, 2 for a UsageError (or one of
    `user_errors`) in one line, 1 with the traceback for anything else."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or _prog_from_main(main)
    debug = debug_requested(argv)
    try:
        result = main(argv)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (UsageError, *user_errors) as e:
        if debug:
            traceback.print_exc()
        fail(prog, str(e) or type(e).__name__)
    except Exception:  # an internal failure: the traceback is the report
        traceback.print_exc()
        print(f"{prog}: internal error (exit 1); the traceback above is for a bug report",
              file=sys.stderr)
        raise SystemExit(1) from None
    code = result if isinstance(result, int) and not isinstance(result, bool) else 0
    raise SystemExit(code)


def _prog_from_main(main: Callable[..., Any]) -> str:
    module = getattr(main, "__module__", "") or ""
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else os.path.basename(sys.argv[0])
    return f"python -m {module.removesuffix('.__main__')}"


def quiet_library_noise() -> None:
    """Silences library messages that mean nothing to a user of these commands.

    - Apache Beam logs "apitools not found, and bigquery client libraries are not available"
      on the root logger at import when its optional GCP clients are absent; only Beam's GCP
      I/O needs them (a gs:// input without them fails later with Beam's own clear error).
    - libtpu probes the GCE metadata server on a CPU host (TPU_SKIP_MDS_QUERY stops it).
    """
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    logging.getLogger().addFilter(_BeamGcpNoise())
    warnings.filterwarnings("ignore", message=r".*apitools.*")


class _BeamGcpNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


@contextlib.contextmanager
def user_errors_from(*kinds: type[BaseException], hint: str = "") -> Iterator[None]:
    """Turns the listed exception types raised inside the block into UsageErrors."""
    try:
        yield
    except kinds as e:
        raise UsageError(f"{e}{'; ' + hint if hint else ''}") from e


def run_step(name: str, argv: Sequence[str], env: dict[str, str] | None = None,
             ok: Sequence[int] = (0,), tag: str = "e2e") -> None:
    """One command of an end-to-end job: logged with its duration; an exit status outside
    `ok` is a UsageError naming the step (the job stops there; its output is above)."""
    start = time.perf_counter()
    print(f"[{tag}] {name}: {' '.join(argv)}", flush=True)
    code = subprocess.run(list(argv), env={**os.environ, **(env or {})}).returncode
    if code not in ok:
        raise UsageError(f"step {name!r} failed with exit status {code} (its output is above; "
                         "the same command resumes after a fix)")
    print(f"[{tag}] {name}: done in {time.perf_counter() - start:.0f}s", flush=True)
