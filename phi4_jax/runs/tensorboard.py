"""A run record in TensorBoard: WORKDIR/tensorboard, the directory the metrics go to.

Text (the Text tab, at the step the launch started from): `run_record/summary` (command,
status, code version, topology, seeds), `run_record/config`, `run_record/code` (with the diff
when the record holds it), `run_record/packages`, `run_record/data`; at the end
`run_record/result`. HParams (the HParams tab): every scalar config field by dotted path (lists
as JSON text), with `train/loss` (the metric logger's scalar) as the metric; a completed launch
ends the session. A resumed run adds its launch's text at its own start step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from phi4_jax.runs import collect

LOGDIR = "tensorboard"
SUFFIX = ".run_record"
METRICS = ("train/loss",)
TEXT_LIMIT = 60_000  # characters of one text summary (a larger diff is cut, the record has it)


def _block(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True)
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT] + "\n... (cut; WORKDIR/runs.jsonl holds all of it)"
    return "```\n" + text + "\n```"


def summary_markdown(record: Mapping[str, Any]) -> str:
    code, topo = record.get("code") or {}, record.get("topology") or {}
    dirty = code.get("dirty")
    lines = [f"**launch {record.get('launch')}** `{record.get('id')}`, status "
             f"{record.get('status')}, started {record.get('started')}",
             "", f"command: `{(record.get('command') or {}).get('line')}`", "",
             f"code: `{code.get('commit')}`" + (f" + uncommitted changes (diff sha256 "
                                                f"`{code.get('diff_sha256')}`)" if dirty
                                                else " (clean)"),
             "", f"topology: {topo.get('device_count')} x {topo.get('device_kind')} "
             f"({topo.get('process_count')} process(es), {topo.get('num_slices')} slice(s)), "
             f"mesh {topo.get('mesh')}", "", f"seeds: {record.get('seeds')}"]
    source = (record.get("command") or {}).get("reproduced_from")
    if source:
        lines += ["", f"reproduced from: {source.get('spec')} (launch {source.get('launch')}, "
                      f"`{source.get('id')}`)"]
    return "\n".join(lines)


def hparams_of(config: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in collect.flatten(config).items():
        if value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return out


def write_start(workdir: str, record: Mapping[str, Any]) -> Any:
    """Writes the record's text and hparams; returns the open writer (for `write_end`)."""
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams

    writer = SummaryWriter(os.path.join(workdir, LOGDIR), filename_suffix=SUFFIX)
    step = int((record.get("resume") or {}).get("step") or 0)
    code = dict(record.get("code") or {})
    diff = code.pop("diff", None)
    texts = {"summary": summary_markdown(record), "config": _block(record.get("config")),
             "code": _block(code) + (f"\n\n```diff\n{diff[:TEXT_LIMIT]}\n```" if diff else ""),
             "packages": _block(record.get("packages")), "data": _block(record.get("data"))}
    for name, text in texts.items():
        writer.add_text(f"run_record/{name}", text, step)
    experiment, start_info, _ = hparams(hparams_of(record.get("config") or {}),
                                        {m: 0.0 for m in METRICS})
    writer.file_writer.add_summary(experiment, step)
    writer.file_writer.add_summary(start_info, step)
    writer.flush()
    return writer


def write_end(writer: Any, record: Mapping[str, Any]) -> None:
    """The launch's status and result as text; a completed launch ends its hparams session."""
    from tensorboardX.summary import hparams

    step = int((record.get("result") or {}).get("step") or 0)
    writer.add_text("run_record/result", _block({k: record.get(k) for k in (
        "launch", "status", "ended", "result", "error")}), step)
    if record.get("status") == "completed":
        _, _, end_info = hparams({}, {})
        writer.file_writer.add_summary(end_info, step)
    writer.close()
