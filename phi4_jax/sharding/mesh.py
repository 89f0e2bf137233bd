"""Device meshes over the three mesh axes `data`, `fsdp`, `tensor`.

A mesh is described by two size tables, one per network:

    ici  sizes inside a slice (the fast interconnect): e.g. {data: 1, fsdp: -1, tensor: 1}
    dcn  sizes across slices (the data-centre network): e.g. {data: -1, fsdp: 1, tensor: 1}

`-1` means "the rest": the devices per slice (ici) or the slices (dcn) left after the other
axes. The mesh axis size is the product ici x dcn. Multi-slice runs put DCN on `data`: gradient
all-reduces cross the slow network once per step, while FSDP gathers stay inside a slice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

AXES: tuple[str, ...] = ("data", "fsdp", "tensor")


def resolve_sizes(sizes: Mapping[str, int], total: int, what: str) -> tuple[int, ...]:
    """Sizes for AXES from `sizes`, replacing one -1 by whatever makes the product `total`.

    `what` names the config field in error messages (e.g. "mesh.ici").
    """
    unknown = set(sizes) - set(AXES)
    if unknown:
        raise ValueError(f"{what} has unknown mesh axes {sorted(unknown)}; the axes are {AXES}")
    values = [int(sizes.get(axis, 1)) for axis in AXES]
    for axis, value in zip(AXES, values):
        if value == 0 or value < -1:
            raise ValueError(f"{what}.{axis}={value}: sizes are positive, or -1 for the rest")
    rest = [axis for axis, value in zip(AXES, values) if value == -1]
    if len(rest) > 1:
        raise ValueError(f"{what}: only one axis may be -1 (the rest), got {rest}")
    known = math.prod(v for v in values if v != -1)
    if rest:
        if total % known:
            raise ValueError(f"{what}: {total} devices/slices do not split into {known} x the rest "
                             f"(sizes {dict(zip(AXES, values))})")
        values[AXES.index(rest[0])] = total // known
    if math.prod(values) != total:
        raise ValueError(f"{what}: sizes {dict(zip(AXES, values))} multiply to "
                         f"{math.prod(values)}, but there are {total} devices/slices")
    return tuple(values)


def num_slices(devices: Sequence[Any]) -> int:
    """Distinct TPU slices among `devices` (1 for devices that carry no slice index)."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def device_grid(ici: Mapping[str, int], dcn: Mapping[str, int] | None,
                devices: Sequence[Any]) -> np.ndarray:
    """The devices arranged as a [data, fsdp, tensor] array (topology-aware on TPU)."""
    slices = num_slices(devices)
    dcn_shape = resolve_sizes(dcn or {}, slices, "mesh.dcn")
    per_slice = len(devices) // slices
    ici_shape = resolve_sizes(ici, per_slice, "mesh.ici")
    # Prefer a mapping that keeps each mesh axis on whole physical torus axes; split physical
    # axes only when the requested shape cannot be laid out otherwise.
    for split in (False, True):
        try:
            if slices > 1:
                return mesh_utils.create_hybrid_device_mesh(
                    ici_shape, dcn_shape, devices, allow_split_physical_axes=split)
            return mesh_utils.create_device_mesh(ici_shape, list(devices),
                                                 allow_split_physical_axes=split)
        except (ValueError, NotImplementedError):
            if split:
                raise
    raise AssertionError("unreachable")


def make_mesh(ici: Mapping[str, int], dcn: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh over AXES from ICI/DCN size tables (all local + remote devices by default).

    Axes are `Auto` (GSPMD): shardings come from jit in/out shardings and the rules' activation
    constraints, not from explicit-sharding types.
    """
    devices = list(jax.devices() if devices is None else devices)
    grid = device_grid(ici, dcn, devices)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def from_config(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the mesh from a run's typed `mesh` section (`phi4_jax.train.config.MeshConfig`,
    or any object with its `ici` and `dcn` size tables)."""
    return make_mesh(dict(mesh_config.ici), dict(mesh_config.dcn), devices)
