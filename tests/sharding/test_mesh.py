"""Mesh sizes from ICI/DCN tables, -1 as "the rest", multi-slice layout."""

import dataclasses

import jax
import numpy as np
import pytest

from phi4_jax.sharding import mesh as mesh_lib


def test_rest_fills_the_remaining_devices():
    assert mesh_lib.resolve_sizes({"data": 2, "fsdp": -1, "tensor": 2}, 8, "mesh.ici") == (2, 2, 2)
    assert mesh_lib.resolve_sizes({"fsdp": -1}, 8, "mesh.ici") == (1, 8, 1)
    assert mesh_lib.resolve_sizes({"data": -1}, 1, "mesh.dcn") == (1, 1, 1)


@pytest.mark.parametrize("sizes, message", [
    ({"data": -1, "fsdp": -1}, "only one axis may be -1"),
    ({"data": 3, "fsdp": -1}, "do not split"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, "multiply to 4"),
    ({"data": 0}, "mesh.ici.data=0"),
    ({"expert": 2}, "unknown mesh axes"),
])
def test_bad_sizes_name_the_field(sizes, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.resolve_sizes(sizes, 8, "mesh.ici")


def test_make_mesh_on_simulated_devices():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": -1, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3
    one = mesh_lib.make_mesh({"fsdp": -1}, devices=jax.devices()[:1])
    assert one.devices.size == 1


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    id: int
    slice_index: int
    platform: str = "cpu"
    device_kind: str = "fake"
    process_index: int = 0


def test_multislice_puts_dcn_on_data():
    # 2 slices x 4 devices: data = 2 (DCN) x 1 (ICI), fsdp = 4 inside each slice.
    devices = [FakeDevice(i, i // 4) for i in range(8)]
    grid = mesh_lib.device_grid({"data": 1, "fsdp": -1, "tensor": 1},
                                {"data": -1, "fsdp": 1, "tensor": 1}, devices)
    assert grid.shape == (2, 4, 1)
    slices = np.vectorize(lambda d: d.slice_index)(grid)
    assert (slices[0] == 0).all() and (slices[1] == 1).all()  # each fsdp group in one slice
