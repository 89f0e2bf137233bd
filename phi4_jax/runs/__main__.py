"""The run records of work dirs: what made a run, and what differs between two runs.

    python -m phi4_jax.runs show WORKDIR            # every launch of WORKDIR, one block each
    python -m phi4_jax.runs show WORKDIR@2 --json   # the 2nd launch's whole record, as JSON
    python -m phi4_jax.runs diff WORKDIR_A WORKDIR_B   # newest records; WORKDIR@N picks one

`diff` prints, per section, "same" or each difference: config (dotted paths with both values),
code (commit, dirty, diff hash), packages (added / removed / changed versions), data (token
store fingerprints, input file hashes), topology (devices, mesh, compiler environment). It
exits 0 either way; a missing record is a one-line error (exit 2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from phi4_jax import cli
from phi4_jax.runs import diff, history

PROG = "python -m phi4_jax.runs"
EXAMPLE = "python -m phi4_jax.runs diff workdirs/tiny_pretrain workdirs/tiny_pretrain_lr"


def _store_line(data: Mapping[str, Any]) -> str:
    stores = data.get("stores") or {}
    files = data.get("files") or {}
    parts = [f"{name} {str((e or {}).get('fingerprint'))[:16]}" for name, e in stores.items()]
    parts += [f"{name} {str(diff._identity(e))[:16]}" for name, e in files.items()
              if name not in stores]
    return ", ".join(parts) or "none (synthetic data or no input files)"


def block(record: Mapping[str, Any]) -> str:
    """A launch's record in a few lines."""
    command = record.get("command") or {}
    code = record.get("code") or {}
    packages = record.get("packages") or {}
    topo = record.get("topology") or {}
    result = record.get("result") or {}
    key = ", ".join(f"{k} {v}" for k, v in (packages.get("key") or {}).items() if v)
    lines = [f"launch {record.get('launch')}  {record.get('id')}  {record.get('status')}  "
             f"{record.get('started')} -> {record.get('ended') or '...'}"
             + (f"  step {result.get('step')}" if result.get("step") is not None else ""),
             f"  command   {command.get('line')}",
             f"  code      {code.get('commit')} "
             + (f"+ uncommitted changes (diff sha256 {str(code.get('diff_sha256'))[:16]}, "
                f"{code.get('diff_bytes')} bytes, {len(code.get('untracked') or {})} "
                "untracked files)" if code.get("dirty") else "(clean)"),
             f"  packages  python {packages.get('python')}; {key}; "
             f"{len(packages.get('distributions') or {})} distributions"]
    if topo:
        lines.append(f"  topology  {topo.get('device_count')} x {topo.get('device_kind')}, "
                     f"{topo.get('process_count')} process(es), {topo.get('num_slices')} "
                     f"slice(s), mesh {topo.get('mesh')}")
    lines.append(f"  data      {_store_line(record.get('data') or {})}")
    lines.append("  seeds     " + (" ".join(f"{k}={v}" for k, v in
                                            (record.get("seeds") or {}).items()) or "none"))
    source = command.get("reproduced_from")
    if source:
        lines.append(f"  reproduced from {source.get('spec')} ({source.get('id')})")
    if record.get("error"):
        lines.append(f"  error     {record['error']}")
    return "\n".join(lines)


def show(spec: str, as_json: bool) -> str:
    workdir, index = history.split_spec(spec)
    records = [history.select(spec)] if index is not None else history.read(workdir)
    if not records:
        history.select(spec)  # raises the one-line RecordError
    if as_json:
        return json.dumps(records[0] if index is not None else records, indent=2,
                          sort_keys=True)
    head = f"{history.path_of(workdir)}: {len(records)} launch record(s)"
    return "\n".join([head, *map(block, records)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(PROG, __doc__, example=EXAMPLE)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{show,diff}")
    p_show = commands.add_parser("show", help="the records of a work dir")
    p_show.add_argument("workdir", help="WORKDIR (every launch) or WORKDIR@N (the N-th)")
    p_show.add_argument("--json", action="store_true", help="print the records as JSON")
    p_diff = commands.add_parser("diff", help="what differs between two runs' records")
    p_diff.add_argument("a", help="WORKDIR_A (its newest record) or WORKDIR_A@N")
    p_diff.add_argument("b", help="WORKDIR_B or WORKDIR_B@N")
    args = parser.parse_args(cli.strip_debug(sys.argv[1:] if argv is None else argv))
    if args.command == "show":
        print(show(args.workdir, args.json))
    else:
        print(diff.render(history.select(args.a), history.select(args.b), args.a, args.b))
    return 0


if __name__ == "__main__":
    cli.run(main, prog=PROG)
