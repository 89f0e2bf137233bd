"""Where metrics go: a console progress line, TensorBoard, metrics.jsonl and optionally W&B.

Every step's scalars are appended to WORKDIR/metrics.jsonl (exact float values; a resumed run
appends the steps it redoes again, the last record of a step wins), flushed to the OS at once
(a killed process loses no row) and fsynced by `sync()`, which the loop calls before each
checkpoint save: every row up to a checkpoint's step is on disk before the checkpoint is. Every
`log_every` steps the console gets one line with rate and ETA and TensorBoard gets all scalars
plus the derived throughput (tokens/s, step time, model FLOP/s, MFU). Evaluation scalars
(`eval/...`, phi4_jax/train/evaluation.py) ride in their step's row, get a console line of
their own and go to TensorBoard under their own names on any step.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def format_count(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


class MetricLogger:
    """Throughput bookkeeping and the writers. Only process 0 writes."""

    def __init__(self, workdir: str, *, total_steps: int, tokens_per_step: int,
                 flops_per_step: float, peak_flops: float | None, log_every: int,
                 tensorboard: bool = True, wandb_project: str | None = None,
                 config: Mapping[str, Any] | None = None, writer: bool = True):
        self.total_steps, self.log_every = total_steps, max(1, log_every)
        self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
        self.peak_flops = peak_flops
        self.writer = writer
        self._mark: tuple[int, float] | None = None
        self._jsonl = self._tb = self._wandb = None
        if not writer:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        torn = os.path.exists(path) and os.path.getsize(path) and not _ends_with_newline(path)
        self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if torn:  # a killed run left half a line: end it so the next record stands alone
            self._jsonl.write("\n")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                log.warning("log.wandb=True but wandb is not installed; skipping W&B")
            else:
                self._wandb = wandb.init(project=wandb_project, dir=workdir, resume="allow",
                                         id=_run_id(workdir), config=dict(config or {}))

    def start(self, step: int) -> None:
        """Marks the start of timed steps (after compilation / restore)."""
        self._mark = (step, time.perf_counter())

    def record(self, step: int, scalars: Mapping[str, float]) -> dict[str, float] | None:
        """Records step `step` (the state after it); on log steps adds throughput and writes."""
        values = dict(scalars)
        logged = step % self.log_every == 0 or step == self.total_steps
        if logged:
            now = time.perf_counter()
            if self._mark is not None and step > self._mark[0]:
                step_time = (now - self._mark[1]) / (step - self._mark[0])
                values["step_time_s"] = step_time
                values["tokens_per_s"] = self.tokens_per_step / step_time
                values["model_flops_per_s"] = self.flops_per_step / step_time
                if self.peak_flops:
                    values["mfu"] = values["model_flops_per_s"] / self.peak_flops
            self._mark = (step, now)
        if not self.writer:
            return values if logged else None
        self._jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self._jsonl.flush()
        evals = {k: v for k, v in values.items() if k.startswith("eval/")}
        if evals:  # evaluation rows are shown whether or not the step is a log step
            print(f"eval step {step}: " + " | ".join(
                f"{k.removeprefix('eval/')} {v:.4f}" for k, v in evals.items()), flush=True)
        if not logged and not evals:
            return None
        shown = values if logged else evals
        if logged:
            print(self.line(step, values), flush=True)
        if self._tb:
            for name, value in shown.items():
                self._tb.add_scalar(name if name in evals else f"train/{name}", value, step)
            self._tb.flush()
        if self._wandb:
            self._wandb.log({k if k in evals else f"train/{k}": v for k, v in shown.items()},
                            step=step)
        return values if logged else None

    def line(self, step: int, v: Mapping[str, float]) -> str:
        parts = [f"step {step:>{len(str(self.total_steps))}}/{self.total_steps} "
                 f"({100 * step / self.total_steps:4.1f}%)",
                 f"loss {v['loss']:.4f}", f"lr {v['learning_rate']:.2e}",
                 f"gnorm {v['grad_norm']:.3f}"]
        if "step_time_s" in v:
            parts += [f"{format_count(v['tokens_per_s'])} tok/s", f"{v['step_time_s']:.3f} s/step"]
            if "mfu" in v:
                parts.append(f"MFU {100 * v['mfu']:.1f}%")
            parts.append(f"ETA {format_duration((self.total_steps - step) * v['step_time_s'])}")
        if v.get("skipped"):
            parts.append(f"SKIPPED non-finite ({int(v['nonfinite_in_row'])} in a row)")
        return " | ".join(parts)

    def sync(self) -> None:
        """Every row recorded so far on disk (fsync), TensorBoard's events flushed."""
        if self._jsonl:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
        if self._tb:
            self._tb.flush()

    def event(self, message: str) -> None:
        if self.writer:
            print(message, flush=True)

    def close(self) -> None:
        for handle in (self._jsonl, self._tb):
            if handle:
                handle.close()
        if self._wandb:
            self._wandb.finish()


def last_logged(workdir: str, upto: int | None = None) -> tuple[int | None, dict[str, float]]:
    """(step, scalars) of the newest step (at most `upto`) in WORKDIR/metrics.jsonl, its last
    record (a resumed run appends the steps it redoes again), or (None, {})."""
    best: tuple[int | None, dict[str, float]] = (None, {})
    try:
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a torn last line of a killed run
                    continue
                step = record.pop("step", None)
                if not isinstance(step, int) or (upto is not None and step > upto):
                    continue
                if best[0] is None or step >= best[0]:
                    best = (step, record)
    except OSError:
        pass
    return best


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _run_id(workdir: str) -> str:
    """A stable W&B run id per workdir, so a resumed run continues the same W&B run."""
    name = os.path.abspath(workdir).strip("/").replace("/", "-")
    return name[-64:] if name else "phi4-jax"
