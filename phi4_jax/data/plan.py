"""The mixture planner: planned tokens and epochs per source, max-repetition checks, plan table.

    python -m phi4_jax.data.plan data_mixtures/phi4_pretrain.py
    python -m phi4_jax.data.plan data_mixtures/phi4_pretrain.py --seq_len 4096 --global_batch 5760
    python -m phi4_jax.data.plan MIXTURE.py --data_root DIR   # unique tokens from the stores

epochs = planned tokens / unique tokens, where planned tokens = fraction x budget. With a
sequence length and global batch the plan is made in whole rows (what the pipeline reads):
every row is one source's, rows are apportioned exactly per stage (phi4_jax.data.schedule), and
a best-fit source needs 1 / fill more rows for its share of tokens.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from phi4_jax import cli
from phi4_jax.data.mixture import Mixture, MixtureError, Source, load_mixture
from phi4_jax.data.schedule import DEFAULT_PERIOD, RowSchedule


class MixturePlanError(ValueError):
    """A mixture that cannot be planned (missing unique tokens, too many epochs)."""


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """The plan of one source: its budget fraction and the tokens planned (in a row plan,
    those of its `rows`) against its unique tokens."""

    source: Source
    fraction: float
    unique_tokens: float
    planned_tokens: float
    rows: int | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def packing(self) -> str:
        return self.source.packing

    @property
    def max_epochs(self) -> float | None:
        return self.source.max_epochs

    @property
    def epochs(self) -> float:
        return self.planned_tokens / self.unique_tokens


@dataclasses.dataclass(frozen=True)
class Plan:
    mixture: Mixture
    total_tokens: float
    sources: tuple[SourcePlan, ...]
    seq_len: int | None = None
    global_batch_size: int | None = None
    num_steps: int | None = None
    stage_steps: tuple[int, ...] = ()

    def source(self, name: str) -> SourcePlan:
        return next(s for s in self.sources if s.name == name)

    def epochs(self) -> dict[str, float]:
        return {s.name: s.epochs for s in self.sources}

    def table(self) -> str:
        return format_table(self)


def _unique(mixture: Mixture, unique_tokens: Mapping[str, float] | None) -> dict[str, float]:
    out = {}
    for s in mixture.sources:
        value = (unique_tokens or {}).get(s.name, s.unique_tokens)
        if value is None or not value > 0:
            raise MixturePlanError(f"mixture {mixture.name!r}, source {s.name!r}: unique tokens "
                                   "unknown (declare unique_tokens or plan against prepared "
                                   "stores)")
        out[s.name] = float(value)
    return out


def check_max_epochs(plan: Plan) -> None:
    over = [f"source {s.name!r}: {s.epochs:.3f} epochs planned, max_epochs {s.max_epochs}"
            for s in plan.sources if s.max_epochs is not None and s.epochs > s.max_epochs + 1e-9]
    if over:
        raise MixturePlanError(f"mixture {plan.mixture.name!r} repeats data more than allowed: "
                               + "; ".join(over))


def token_plan(mixture: Mixture, *, total_tokens: float | None = None,
               unique_tokens: Mapping[str, float] | None = None) -> Plan:
    """Token-level plan: planned = fraction x budget; enforces max_epochs."""
    total = float(total_tokens if total_tokens is not None else mixture.total_tokens)
    unique = _unique(mixture, unique_tokens)
    fractions = mixture.fractions()
    planned = {name: f * total for name, f in fractions.items()}
    sources = tuple(SourcePlan(s, fractions[s.name], unique[s.name], planned[s.name])
                    for s in mixture.sources)
    plan = Plan(mixture, total, sources)
    check_max_epochs(plan)
    return plan


def stage_steps(mixture: Mixture, num_steps: int) -> list[int]:
    """Steps per stage: stage boundaries at round(cumulative fraction x num_steps)."""
    bounds = np.round(np.cumsum([0.0] + [st.fraction for st in mixture.stages]) * num_steps)
    bounds[-1] = num_steps
    return [int(b) for b in np.diff(bounds.astype(np.int64))]


def row_plan(mixture: Mixture, *, seq_len: int, global_batch_size: int,
             num_steps: int | None = None, unique_tokens: Mapping[str, float] | None = None,
             fills: Mapping[str, float] | None = None,
             max_period: int = DEFAULT_PERIOD) -> tuple[Plan, RowSchedule]:
    """Row-level plan and the schedule the pipeline reads.

    num_steps: defaults to floor(total_tokens / (global_batch_size x seq_len)).
    fills: non-padding fraction of a best-fit source's rows (1.0 for concat sources).
    """
    if num_steps is None:
        num_steps = int(mixture.total_tokens // (global_batch_size * seq_len))
    if num_steps <= 0:
        raise MixturePlanError(f"mixture {mixture.name!r}: budget gives {num_steps} steps")
    unique = _unique(mixture, unique_tokens)
    fill = np.array([(fills or {}).get(s.name, 1.0) for s in mixture.sources])
    steps = stage_steps(mixture, num_steps)
    weights = []
    for st in mixture.stages:
        w = np.array([st.weights.get(s.name, 0.0) for s in mixture.sources]) / fill
        weights.append(w / w.sum())
    schedule = RowSchedule([n * global_batch_size for n in steps], weights, max_period)
    rows = schedule.rows_per_source()
    total = float(num_steps * global_batch_size * seq_len)
    fractions = mixture.fractions()
    sources = tuple(SourcePlan(s, fractions[s.name], unique[s.name], rows[i] * seq_len * fill[i],
                               int(rows[i]))
                    for i, s in enumerate(mixture.sources))
    plan = Plan(mixture, total, sources, seq_len, global_batch_size, num_steps, tuple(steps))
    check_max_epochs(plan)
    return plan, schedule


def _human(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if round(abs(x) / scale, 2) >= 1:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_table(plan: Plan) -> str:
    m = plan.mixture
    lines = [f"mixture {m.name}" + (f": {m.description}" if m.description else ""),
             f"budget {_human(plan.total_tokens)} tokens"]
    if plan.num_steps is not None:
        lines.append(f"{plan.num_steps} steps x {plan.global_batch_size} rows x {plan.seq_len} "
                     f"tokens; steps per stage {list(plan.stage_steps)}")
    stage_cols = len(m.stages) > 1
    header = f"{'source':<16}{'packing':>9}{'fraction':>10}"
    if stage_cols:
        header += "".join(f"{'stage ' + str(k):>9}" for k in range(len(m.stages)))
    header += f"{'unique':>11}{'planned':>11}{'epochs':>9}{'max':>7}"
    header += f"{'rows':>13}" if plan.num_steps is not None else ""
    lines += [header, "-" * len(header)]
    for s in plan.sources:
        row = f"{s.name:<16}{s.packing:>9}{s.fraction:>10.1%}"
        if stage_cols:
            row += "".join(f"{st.weights.get(s.name, 0.0):>9.1%}" for st in m.stages)
        row += (f"{_human(s.unique_tokens):>11}{_human(s.planned_tokens):>11}{s.epochs:>9.3f}"
                f"{'-' if s.max_epochs is None else format(s.max_epochs, 'g'):>7}")
        row += f"{s.rows:>13}" if s.rows is not None else ""
        lines.append(row)
    unique = sum(s.unique_tokens for s in plan.sources)
    planned = sum(s.planned_tokens for s in plan.sources)
    total = f"{'total':<16}{'':>9}{sum(s.fraction for s in plan.sources):>10.1%}"
    total += " " * (9 * len(m.stages)) if stage_cols else ""
    lines.append(total + f"{_human(unique):>11}{_human(planned):>11}{planned / unique:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m phi4_jax.data.plan", __doc__,
                        example="python -m phi4_jax.data.plan data_mixtures/phi4_pretrain.py "
                                "--seq_len=4096 --global_batch=5760")
    parser.add_argument("mixture", help="mixture file (e.g. data_mixtures/phi4_pretrain.py) or "
                                        "dotted module name (data_mixtures.phi4_pretrain)")
    parser.add_argument("--total_tokens", type=float, help="override the mixture's budget")
    parser.add_argument("--seq_len", type=int, help="plan in rows of this length")
    parser.add_argument("--global_batch", type=int, help="rows per step (with --seq_len)")
    parser.add_argument("--num_steps", type=int, help="steps (default: budget / batch tokens)")
    parser.add_argument("--data_root", help="read unique tokens (and fills) from these stores")
    parser.add_argument("--seed", type=int, default=0, help="layout seed for best-fit fills")
    args = parser.parse_args(argv)
    try:
        mixture = load_mixture(args.mixture)
    except MixtureError as e:
        raise cli.UsageError(str(e)) from e
    if args.total_tokens is not None:
        mixture = mixture.replace(total_tokens=args.total_tokens)
    unique, fills = None, None
    if args.data_root is not None:
        from phi4_jax.data.row_layout import measure_sources  # noqa: PLC0415 (opens stores)
        unique, fills = measure_sources(mixture.resolve(args.data_root), args.seq_len, args.seed)
    try:
        if args.seq_len is not None and args.global_batch is not None:
            plan, _ = row_plan(mixture, seq_len=args.seq_len, global_batch_size=args.global_batch,
                               num_steps=args.num_steps, unique_tokens=unique, fills=fills)
        else:
            plan = token_plan(mixture, unique_tokens=unique)
    except MixturePlanError as e:
        raise cli.UsageError(str(e)) from e
    print(plan.table())
    return 0


if __name__ == "__main__":
    cli.run(main)
