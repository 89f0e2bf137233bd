"""TPU slice names -> physical topology, for ahead-of-time compilation on a CPU host.

`describe("v5p-128")` gives the chip grid, HBM per chip and the libtpu topology arguments;
`devices("v5p-128")` returns compile-only TPU devices (libtpu, no TPU needed) that a Mesh can
be built over. Names follow Cloud TPU accelerator types: v4-N and v5p-N count TensorCores (two
per chip), v5litepod-N (v5e) and v6e-N count chips.
"""

from __future__ import annotations

import dataclasses
import math
import re

GIB = 2**30

# generation -> (libtpu name, TensorCores per chip in the accelerator name, HBM per chip, dims)
_GENERATIONS = {
    "v4": ("v4", 2, 32 * GIB, 3),
    "v5p": ("v5p", 2, 95 * GIB, 3),
    "v5litepod": ("v5e", 1, 16 * GIB, 2),
    "v5e": ("v5e", 1, 16 * GIB, 2),
    "v6e": ("v6e", 1, 32 * GIB, 2),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # e.g. "v5p-128"
    generation: str  # libtpu's name: v4, v5p, v5e, v6e
    chips: int
    shape: tuple[int, ...]  # chip grid
    hbm_bytes: int  # per chip
    num_slices: int = 1

    @property
    def topology_name(self) -> str:
        return f"{self.generation}:{'x'.join(map(str, self.shape))}"

    @property
    def wrap(self) -> tuple[bool, bool, bool]:
        """Torus wrap-around links of a 3D slice: present once it is made of full 4x4x4 cubes.

        They change how libtpu lays out collectives (and so the memory it needs): the v5p-128
        Phi-4 step needs 0.5 GiB less per chip with them than on an open mesh.
        """
        full = len(self.shape) == 3 and all(d % 4 == 0 for d in self.shape)
        return (full, full, full)

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        return (2, 2, 1) if self.chips >= 4 else (self.chips, 1, 1)


def _grid(chips: int, dims: int) -> tuple[int, ...]:
    """The most cube-like grid: power-of-two sides, or for 3D slices of whole 4x4x4 cubes any
    multiple of 64 chips (e.g. v5p-768: 4x8x12), the shapes Cloud TPU provisions."""
    if dims == 3 and chips % 64 == 0:
        n = chips // 64
        a, b, c = min(((a, b, n // (a * b)) for a in range(1, n + 1) for b in range(a, n + 1)
                       if n % (a * b) == 0 and n // (a * b) >= b),
                      key=lambda t: t[2] / t[0])
        return (4 * a, 4 * b, 4 * c)
    if chips & (chips - 1):
        raise ValueError(f"{chips} chips: slices are power-of-two sized, or multiples of 64 "
                         "chips for v4 / v5p")
    sides = [1] * dims
    i = 0
    while math.prod(sides) < chips:
        sides[i % dims] *= 2
        i += 1
    ordered = sorted(sides)
    return tuple([d for d in ordered if d > 1] + [d for d in ordered if d == 1])


def describe(name: str, num_slices: int = 1) -> Topology:
    """'v5p-128' -> Topology(chips=64, shape=(4, 4, 4), ...)."""
    m = re.fullmatch(r"(v4|v5p|v5litepod|v5e|v6e)-(\d+)", name)
    if not m:
        raise ValueError(f"unknown TPU type {name!r}; expected e.g. v5p-128, v4-64, "
                         "v5litepod-256, v6e-256")
    generation, cores_per_chip, hbm, dims = _GENERATIONS[m.group(1)]
    cores = int(m.group(2))
    if cores % cores_per_chip:
        raise ValueError(f"{name}: {cores} is not a whole number of chips")
    chips = cores // cores_per_chip
    return Topology(name, generation, chips, _grid(chips, dims), hbm, num_slices)


def devices(name: str, num_slices: int = 1) -> list:
    """Compile-only devices of the named slice(s), from libtpu's topology description."""
    from jax.experimental import topologies

    topo = describe(name, num_slices)
    kwargs = dict(chip_config_name="default", chips_per_host_bounds=topo.chips_per_host_bounds,
                  num_slices=num_slices)
    if len(topo.shape) == 3:
        kwargs["wrap"] = topo.wrap
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topo.topology_name,
                                            **kwargs)
    except Exception as e:  # libtpu missing or an unsupported shape
        raise RuntimeError(f"could not describe TPU topology {topo.topology_name} for {name}: "
                           f"{e}. Ahead-of-time TPU compilation needs libtpu: "
                           "pip install 'phi4_jax[tpu]'") from e
    return list(desc.devices)
