"""Ahead-of-time compile of the production train steps for TPU topologies, on this CPU host.

    python bench/aot.py                      # all cases; a table, then one line per case
    python bench/aot.py --cases=pretrain     # pretrain | midtrain | plan (comma-separated)
    python bench/aot.py --json=out.json      # also machine-readable (the slow test reads it)

Cases (each compiled by libtpu's real TPU compiler over compile-only devices: no TPU needed):

  pretrain   phi4_pretrain on v5p-128 (64 chips, FSDP 64), per-device batch 1, seq 4096, full
             remat, scanned layers, one micro-batch (global batch 64): the shape and settings
             of MaxText's Phi-4 / v5p-128 measurement (per_device_batch_size=1, no gradient
             accumulation). Peer: MaxText needs 8.11 GiB per chip (arguments 2.56 GiB +
             temporaries 5.54 GiB); ratio = ours / MaxText (below 1 is less memory).
             Target: <= 1.
  accum      the same with the real global batch 5760: 90 micro-batches of 64 accumulated
             (float32 gradient accumulator and one micro-batch's gradients on top). Fits.
  midtrain   phi4_midtrain (16,384 tokens, RoPE 250K, global batch 1440) on v5p-128 with the
             batch planner's layout (1440 does not split over 64 chips as pure FSDP). Target:
             fits in 95 GiB HBM.
  plan       phi4_pretrain's exact 5760-sequence batch on a production slice, v5p-768, with the
             batch planner's layout (data 3 x fsdp 128, 15 sequences per chip, no
             accumulation). Target: fits.

Per-chip memory is XLA's buffer assignment (arguments + temporaries + outputs not aliased to
donated inputs), the number `launch.tpu --dry_run` prints as `per-chip peak:`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

GIB = 2**30
MAXTEXT_PEAK_GIB = 8.11  # MaxText, Phi-4 14B on v5p-128: args 2.56 + temp 5.54 GiB per chip


def _pretrain(global_batch: int | None = 64):
    import experiments

    c = experiments.get_config("phi4_pretrain")
    c.train.per_device_batch = 1
    c.model.remat = "full"
    if global_batch:
        c.train.global_batch = global_batch
    return c, "v5p-128", 1, False


def _midtrain():
    import experiments

    return experiments.get_config("phi4_midtrain"), "v5p-128", 1, True


def _plan():
    import experiments

    return experiments.get_config("phi4_pretrain"), "v5p-768", 1, True


CASES = {"pretrain": _pretrain, "accum": lambda: _pretrain(None), "midtrain": _midtrain,
         "plan": _plan}


def run_case(name: str) -> dict:
    from launch import planner
    from phi4_jax.train import aot

    config, tpu, slices, plan_batch = CASES[name]()
    if plan_batch:
        planner.plan_batch(config, tpu, slices).apply(config)
    started = time.perf_counter()
    report = aot.dry_run(config, tpu, slices)
    for line in report.lines():
        print(f"[{name}] {line}", flush=True)
    from phi4_jax.model.config import from_experiment

    estimate = planner.estimate_bytes(
        from_experiment(config.model), fsdp=report.mesh["fsdp"], tensor=report.mesh["tensor"],
        rows=report.rows_per_device, seq_len=report.seq_len,
        accumulate=report.micro_batches > 1,
        loss_vocab_chunks=int(config.train.loss_vocab_chunks))
    return {
        "estimate_gib": estimate / GIB,
        "case": name, "experiment": config.name, "tpu": report.tpu,
        "mesh": report.mesh, "micro_batches": report.micro_batches,
        "rows_per_device": report.rows_per_device, "seq_len": report.seq_len,
        "global_batch": report.global_batch,
        "argument_gib": report.argument_bytes / GIB, "temp_gib": report.temp_bytes / GIB,
        "peak_gib": report.peak_bytes / GIB, "hbm_gib": report.hbm_bytes / GIB,
        "fits": report.fits, "compile_s": report.compile_seconds,
        "wall_s": time.perf_counter() - started,
        "maxtext_peak_gib": MAXTEXT_PEAK_GIB if name == "pretrain" else None,
    }


def table(rows: list[dict]) -> str:
    head = (f"{'case':<9} {'experiment':<14} {'target':<8} {'mesh':<22} {'batch':<16} "
            f"{'args':>6} {'temp':>6} {'peak':>6} {'HBM':>5} {'compile':>8} {'peer':>6} "
            f"{'ratio':>6}")
    out = [head, "-" * len(head)]
    for r in rows:
        mesh = "x".join(f"{k[0]}{v}" for k, v in r["mesh"].items())
        batch = f"{r['micro_batches']}x{r['rows_per_device']}/dev@{r['seq_len']}"
        peer = r["maxtext_peak_gib"]
        ratio = f"{r['peak_gib'] / peer:.3f}" if peer else "-"
        out.append(f"{r['case']:<9} {r['experiment']:<14} {r['tpu']:<8} {mesh:<22} "
                   f"{batch:<16} {r['argument_gib']:6.2f} {r['temp_gib']:6.2f} "
                   f"{r['peak_gib']:6.2f} {r['estimate_gib']:6.2f} {r['hbm_gib']:5.0f} "
                   f"{r['compile_s']:7.1f}s "
                   f"{peer or '-':>6} {ratio:>6}")
    out.append("memory in GiB per chip; plan: the batch planner's estimate of the peak "
               "(planner.estimate_bytes); peer: MaxText's per-chip peak for the same shape; "
               "ratio = ours / peer")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: "
                        + ", ".join(CASES))
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases are {sorted(CASES)}")
    rows = []
    for i, name in enumerate(names):
        print(f"compiling case {i + 1}/{len(names)}: {name} ...", flush=True)
        rows.append(run_case(name))
    print(table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    failed = [r["case"] for r in rows if not r["fits"]]
    if failed:
        print(f"does not fit in HBM: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
