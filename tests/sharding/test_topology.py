"""The TPU topology table: chips, shapes and HBM per slice type, clear refusals."""

import pytest

from phi4_jax.sharding import topology


@pytest.mark.parametrize("name,chips,shape,hbm_gib", [
    ("v5p-128", 64, (4, 4, 4), 95), ("v5p-768", 384, (4, 8, 12), 95),
    ("v4-8", 4, (2, 2, 1), 32), ("v5litepod-256", 256, (16, 16), 16),
    ("v6e-8", 8, (2, 4), 32)])
def test_topology_table(name, chips, shape, hbm_gib):
    topo = topology.describe(name)
    assert (topo.chips, topo.shape, topo.hbm_bytes) == (chips, shape, hbm_gib * 2**30)


@pytest.mark.parametrize("name,message", [("v9-8", "unknown TPU type"),
                                          ("v5p-129", "whole number of chips"),
                                          ("v5litepod-24", "power-of-two")])
def test_topology_rejects_unknown_slices(name, message):
    with pytest.raises(ValueError, match=message):
        topology.describe(name)
