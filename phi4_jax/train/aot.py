"""Ahead-of-time compilation of the exact train step for a TPU topology, on a CPU host.

    report = dry_run(config, "v5p-128")
    print("\n".join(report.lines()))       # the last line: "per-chip peak: X.XX GiB of Y GiB HBM"

The program is the one `loop.run` would execute (same `loop.build`: mesh from the config's
ICI/DCN sizes, rules, validation, shardings, donation), lowered over libtpu's compile-only
devices for the named slice and compiled by the real TPU compiler. Memory figures are XLA's
per-chip buffer assignment: arguments (parameters, optimizer state, batch), temporaries, and
outputs not aliased to donated arguments. Peak = arguments + temporaries + unaliased outputs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax

from phi4_jax.sharding import topology as topo_lib
from phi4_jax.train import flops
from phi4_jax.train.config import RunConfig

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class DryRunReport:
    tpu: str
    chips: int
    topology: str
    mesh: dict[str, int]
    rules: str
    global_batch: int
    micro_batches: int
    rows_per_device: int  # sequences per device per micro-step
    seq_len: int
    params: int
    argument_bytes: int
    temp_bytes: int
    output_bytes: int
    alias_bytes: int
    hbm_bytes: int
    model_flops_per_step: float
    peak_flops_per_chip: float | None
    compile_seconds: float

    @property
    def peak_bytes(self) -> int:
        return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.hbm_bytes

    def lines(self) -> list[str]:
        gib = lambda b: f"{b / GIB:.2f} GiB"
        mesh = " x ".join(f"{k}={v}" for k, v in self.mesh.items())
        out = [
            f"target: {self.tpu} ({self.chips} chips, topology {self.topology}), mesh {mesh}, "
            f"rules {self.rules!r}",
            f"batch layout: global batch {self.global_batch} x {self.seq_len} tokens = "
            f"{self.micro_batches} micro-batch(es) x {self.global_batch // self.micro_batches} "
            f"sequences; {self.rows_per_device} sequence(s) per device per micro-step",
            f"parameters: {self.params / 1e9:.3f}B",
            f"per-chip memory: arguments {gib(self.argument_bytes)}, temporaries "
            f"{gib(self.temp_bytes)}, outputs not aliased "
            f"{gib(self.output_bytes - self.alias_bytes)}; total "
            f"{gib(self.peak_bytes)} vs {gib(self.hbm_bytes)} HBM "
            f"({100 * self.peak_bytes / self.hbm_bytes:.1f}%)",
            f"model FLOPs per step: {self.model_flops_per_step:.3e} "
            f"({self.model_flops_per_step / self.chips:.3e} per chip)",
        ]
        if self.peak_flops_per_chip:
            ideal = self.model_flops_per_step / self.chips / self.peak_flops_per_chip
            out.append(f"step time at 100% / 50% MFU: {ideal:.2f} s / {2 * ideal:.2f} s "
                       f"({self.peak_flops_per_chip / 1e12:.0f} TFLOP/s bf16 per chip)")
        out.append(f"compile time: {self.compile_seconds:.1f} s")
        out.append(f"per-chip peak: {self.peak_bytes / GIB:.2f} GiB of "
                   f"{self.hbm_bytes / GIB:.2f} GiB HBM")
        return out


def compile_step(config: Any, devices: list) -> tuple[Any, Any, float]:
    """(program, compiled step, compile seconds) for `config` (a RunConfig or an experiment
    ConfigDict) over `devices`."""
    from phi4_jax.train import loop  # the loop module builds programs; imported lazily

    prog = loop.build(config, devices)
    start = time.perf_counter()
    # TPU programs use the default matmul precision (tests may raise it process-wide for CPU
    # numerics; Mosaic kernels reject that for bf16 operands).
    with jax.default_matmul_precision("default"):
        compiled = prog.step.lower(*prog.abstract_inputs()).compile()
    return prog, compiled, time.perf_counter() - start


def dry_run(config: Any, tpu: str, num_slices: int = 1) -> DryRunReport:
    """Compiles `config`'s train step (a RunConfig or an experiment ConfigDict) for
    `num_slices` slices of `tpu` and reports per chip."""
    from phi4_jax.train import loop

    run_config = RunConfig.of(config)
    topo = topo_lib.describe(tpu, num_slices)
    devices = topo_lib.devices(tpu, num_slices)
    prog, compiled, seconds = compile_step(run_config, devices)
    memory = compiled.memory_analysis()
    mesh = dict(prog.mesh.shape)
    batch_ways = prog.rules.shards(("batch",))[0]
    global_batch = run_config.train.global_batch
    micro = loop.micro_batches(run_config.train, prog.rules)
    rows = global_batch // micro // batch_ways
    seq_len = run_config.data.seq_len
    tokens = global_batch * seq_len
    return DryRunReport(
        tpu=tpu if num_slices == 1 else f"{num_slices} x {tpu}", chips=topo.chips * num_slices,
        topology=topo.topology_name, mesh=mesh, rules=prog.rules.name,
        global_batch=global_batch, micro_batches=micro, rows_per_device=rows, seq_len=seq_len,
        params=prog.param_count,
        argument_bytes=memory.argument_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
        output_bytes=memory.output_size_in_bytes, alias_bytes=memory.alias_size_in_bytes,
        hbm_bytes=topo.hbm_bytes,
        model_flops_per_step=flops.flops_per_token(prog.model_config, seq_len) * tokens,
        peak_flops_per_chip=flops.device_peak_flops(devices[0]),
        compile_seconds=seconds)
