"""Meshes, logical axes and the rules tables that map one onto the other."""

from phi4_jax.sharding import axes
from phi4_jax.sharding.mesh import AXES, make_mesh, resolve_sizes
from phi4_jax.sharding.rules import TABLES, Rules, activate, build_table

__all__ = ["AXES", "TABLES", "Rules", "activate", "axes", "build_table", "make_mesh",
           "resolve_sizes"]
