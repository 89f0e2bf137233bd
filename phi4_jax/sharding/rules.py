"""Named rules tables: logical axis name -> mesh axes, plus validation before compilation.

A table maps each logical name (see `axes.VOCABULARY`) to a tuple of mesh axes; names absent
from the table (or mapped to `()`) are replicated. Tables:

    fsdp     batch -> (data, fsdp); embed -> fsdp. Every weight is sharded over `fsdp` along
             its embed dimension and gathered per layer; activations split over the batch.
    fsdp_tp  fsdp plus Megatron tensor parallelism: heads, kv_heads, mlp, vocab -> tensor.

Experiments name a table (`mesh.rules`) and may override single names
(`mesh.rule_overrides.kv_heads=''` replicates kv_heads; `'data,fsdp'` maps to two axes).

Mapping semantics (as Flax logical partitioning): within one PartitionSpec a mesh axis is used
at most once; a later dimension whose axes were all taken by earlier ones is replicated, and a
dimension keeps whichever of its axes are still free. So activation `embed` is replicated when
`batch` already took `fsdp`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from phi4_jax.sharding import axes as ax
from phi4_jax.sharding.mesh import AXES

MeshAxes = tuple[str, ...]

_FSDP: dict[str, MeshAxes] = {ax.BATCH: ("data", "fsdp"), ax.EMBED: ("fsdp",)}
TABLES: Mapping[str, Mapping[str, MeshAxes]] = {
    "fsdp": _FSDP,
    "fsdp_tp": {**_FSDP, ax.HEADS: ("tensor",), ax.KV_HEADS: ("tensor",), ax.MLP: ("tensor",),
                ax.VOCAB: ("tensor",)},
}


def parse_axes(value: str | Sequence[str] | None, where: str) -> MeshAxes:
    """'' or None -> () (replicate); 'data,fsdp' or ('data', 'fsdp') -> ('data', 'fsdp')."""
    if value is None:
        return ()
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    for name in names:
        if name not in AXES:
            raise ValueError(f"{where}: unknown mesh axis {name!r}; the mesh axes are {AXES}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: mesh axis repeated in {names}")
    return tuple(names)


def build_table(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, MeshAxes]:
    """The named table with per-logical-name overrides (None values leave the table's entry)."""
    if name not in TABLES:
        raise ValueError(f"mesh.rules={name!r} is not a rules table; choose one of "
                         f"{sorted(TABLES)}")
    table = dict(TABLES[name])
    for logical, value in (overrides or {}).items():
        if logical not in ax.VOCABULARY:
            raise ValueError(f"mesh.rule_overrides.{logical}: not a logical axis; the vocabulary "
                             f"is {ax.VOCABULARY}")
        if value is not None:
            table[logical] = parse_axes(value, f"mesh.rule_overrides.{logical}")
    return table


@dataclass(frozen=True)
class Rules:
    """A rules table bound to a mesh: the model's `Partitioner` and the source of shardings."""

    mesh: Mesh
    table: Mapping[str, MeshAxes]
    name: str = "custom"
    _sizes: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sizes", dict(self.mesh.shape))
        for logical, mesh_axes in self.table.items():
            ax.check((logical,))
            parse_axes(mesh_axes, f"rules {self.name!r} entry {logical!r}")

    def mesh_axes(self, logical: Sequence[str | None],
                  priority: Sequence[int] | None = None) -> tuple[MeshAxes, ...]:
        """Per dimension, the mesh axes it is split over (a mesh axis used once per spec).

        Dimensions claim their mesh axes left to right, or in `priority` order (dimension
        indices) when given.
        """
        names = ax.check(tuple(logical))
        out: list[MeshAxes] = [()] * len(names)
        used: set[str] = set()
        for i in range(len(names)) if priority is None else priority:
            name = names[i]
            free = tuple(a for a in self.table.get(name, ()) if a not in used) if name else ()
            used.update(free)
            out[i] = free
        return tuple(out)

    def spec(self, logical: Sequence[str | None],
             priority: Sequence[int] | None = None) -> PartitionSpec:
        def entry(axes: MeshAxes):
            return None if not axes else axes[0] if len(axes) == 1 else axes
        return PartitionSpec(*(entry(a) for a in self.mesh_axes(logical, priority)))

    def sharding(self, logical: Sequence[str | None],
                 priority: Sequence[int] | None = None) -> NamedSharding:
        return NamedSharding(self.mesh, self.spec(logical, priority))

    def constrain(self, x: jax.Array, logical: Sequence[str | None],
                  priority: Sequence[int] | None = None) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, self.sharding(logical, priority))

    def shardings(self, logical_tree: Any) -> Any:
        """Maps a tree of logical PartitionSpecs to NamedShardings."""
        return jax.tree.map(lambda spec: self.sharding(tuple(spec)), logical_tree,
                            is_leaf=lambda x: isinstance(x, PartitionSpec))

    def shards(self, logical: Sequence[str | None]) -> tuple[int, ...]:
        """How many ways each dimension is split."""
        return tuple(math.prod(self._sizes[a] for a in axes) for axes in self.mesh_axes(logical))

    def validate(self, shapes: Any, logical_tree: Any, *, what: str = "parameter") -> None:
        """Raises ValueError naming the array, dimension and mesh axes for any uneven split.

        `shapes` is a tree of arrays / ShapeDtypeStructs, `logical_tree` the matching tree of
        logical PartitionSpecs.
        """
        flat_specs = jax.tree_util.tree_flatten_with_path(
            logical_tree, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
        flat_shapes = jax.tree.leaves(shapes)
        if len(flat_specs) != len(flat_shapes):
            raise ValueError(f"{len(flat_shapes)} {what} arrays but {len(flat_specs)} specs")
        for (path, spec), leaf in zip(flat_specs, flat_shapes):
            self.check_dims(jax.tree_util.keystr(path, simple=True, separator="/"), leaf.shape,
                            tuple(spec), what=what)

    def check_dims(self, name: str, shape: Sequence[int], logical: Sequence[str | None], *,
                   what: str) -> None:
        if len(shape) != len(logical):
            raise ValueError(f"{what} {name}: shape {tuple(shape)} has {len(shape)} dimensions "
                             f"but logical axes {tuple(logical)}")
        for dim, (size, lname, axes) in enumerate(zip(shape, logical,
                                                     self.mesh_axes(logical))):
            ways = math.prod(self._sizes[a] for a in axes)
            if size % ways:
                sizes = ", ".join(f"{a}={self._sizes[a]}" for a in axes)
                raise ValueError(
                    f"{what} {name} dimension {dim} ({lname!r}, size {size}) does not divide "
                    f"over mesh axes {axes} ({sizes}; {ways} ways) under rules {self.name!r}. "
                    f"Replicate it with --exp.mesh.rule_overrides.{lname}='' or change the "
                    "mesh sizes.")


def from_config(mesh_config: Any, mesh: Mesh) -> Rules:
    """Rules from a run's typed `mesh` section (`phi4_jax.train.config.MeshConfig`, or any
    object with its `rules` table name and `rule_overrides` mapping)."""
    overrides = dict(mesh_config.rule_overrides or {})
    return Rules(mesh, build_table(mesh_config.rules, overrides), name=mesh_config.rules)


@contextlib.contextmanager
def activate(rules: Rules | None) -> Iterator[Rules | None]:
    """Installs `rules` as the model's Partitioner (activation constraints) in the block."""
    with ax.use_partitioner(rules):
        yield rules
