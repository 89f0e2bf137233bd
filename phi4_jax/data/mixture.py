"""Mixture declarations: sources (logical name -> token store), token fractions per stage, budget.

A mixture file (`data_mixtures/*.py`) is a Python module that defines `MIXTURE`, a `Mixture`.
It only declares; `phi4_jax.data.plan` turns it into epochs per source and
`phi4_jax.data.pipeline` into batches. Example:

    MIXTURE = Mixture(
        name="example", total_tokens=10**12,
        sources=(Source("web", "web", unique_tokens=4e11), Source("code", "code", max_epochs=4)),
        stages=(Stage({"web": 0.7, "code": 0.3}, fraction=0.8),   # first 80% of the budget
                Stage({"web": 0.5, "code": 0.5}, fraction=0.2)))  # weights change at 80%

Fractions are shares of the token budget (not of documents or rows). Relative store paths
resolve against the `data_root` given at build time.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import os
from collections.abc import Mapping

PACKING_MODES = ("concat", "best_fit")
_TOLERANCE = 1e-6


class MixtureError(ValueError):
    """An invalid mixture declaration; the message names the mixture, stage or source."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One token store and how it may be used.

    unique_tokens: tokens in one epoch; declared for planning before the store exists, and
      checked against the store's manifest when the pipeline opens it.
    max_epochs: the plan fails if this source would be read more often than this.
    packing: "concat" (documents back to back, split at row ends: pretraining) or "best_fit"
      (whole documents packed into rows, padding the rest: SFT and long-context data).
    """

    name: str
    path: str
    unique_tokens: float | None = None
    max_epochs: float | None = None
    packing: str = "concat"


@dataclasses.dataclass(frozen=True)
class Stage:
    """Token fractions per source for `fraction` of the budget (stages run in order)."""

    weights: Mapping[str, float]
    fraction: float = 1.0
    name: str = ""


@dataclasses.dataclass(frozen=True)
class Mixture:
    name: str
    sources: tuple[Source, ...]
    stages: tuple[Stage, ...]
    total_tokens: float
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "stages", tuple(self.stages))
        names = [s.name for s in self.sources]
        where = f"mixture {self.name!r}"
        if not names:
            raise MixtureError(f"{where}: no sources")
        if len(set(names)) != len(names):
            raise MixtureError(f"{where}: duplicate source names {names}")
        for s in self.sources:
            if s.packing not in PACKING_MODES:
                raise MixtureError(f"{where}, source {s.name!r}: packing {s.packing!r} not in "
                                   f"{PACKING_MODES}")
            if s.unique_tokens is not None and not s.unique_tokens > 0:
                raise MixtureError(f"{where}, source {s.name!r}: unique_tokens must be > 0")
            if s.max_epochs is not None and not s.max_epochs > 0:
                raise MixtureError(f"{where}, source {s.name!r}: max_epochs must be > 0")
        if not self.total_tokens > 0:
            raise MixtureError(f"{where}: total_tokens must be > 0")
        if not self.stages:
            raise MixtureError(f"{where}: no stages")
        for k, stage in enumerate(self.stages):
            label = f"{where}, stage {k} {stage.name!r}"
            unknown = set(stage.weights) - set(names)
            if unknown:
                raise MixtureError(f"{label}: weights for unknown sources {sorted(unknown)}")
            if any(not (w >= 0 and math.isfinite(w)) for w in stage.weights.values()):
                raise MixtureError(f"{label}: weights must be finite and >= 0")
            if abs(sum(stage.weights.values()) - 1) > _TOLERANCE:
                raise MixtureError(f"{label}: weights sum to {sum(stage.weights.values())}, "
                                   "not 1 (they are fractions of the stage's tokens)")
            if not stage.fraction > 0:
                raise MixtureError(f"{label}: fraction must be > 0")
        total = sum(stage.fraction for stage in self.stages)
        if abs(total - 1) > _TOLERANCE:
            raise MixtureError(f"{where}: stage fractions sum to {total}, not 1")

    @property
    def source_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"mixture {self.name!r} has no source {name!r}")

    def fractions(self) -> dict[str, float]:
        """Each source's share of the whole budget (over all stages)."""
        return {s.name: sum(st.fraction * st.weights.get(s.name, 0.0) for st in self.stages)
                for s in self.sources}

    def resolve(self, data_root: str | None) -> Mixture:
        """The same mixture with store paths made absolute (relative ones joined to data_root)."""
        root = data_root if data_root is not None else os.getcwd()
        sources = tuple(dataclasses.replace(s, path=s.path if "://" in s.path else
                                            os.path.abspath(os.path.join(root, s.path)))
                        for s in self.sources)
        return dataclasses.replace(self, sources=sources)

    def replace(self, **changes) -> Mixture:
        return dataclasses.replace(self, **changes)


def load_mixture(spec: str | Mixture) -> Mixture:
    """Loads `MIXTURE` from a mixture file path, a module name or a bare name in data_mixtures/
    (e.g. "phi4_pretrain"); a Mixture passes through."""
    if isinstance(spec, Mixture):
        return spec
    if spec.endswith(".py") or os.sep in spec:
        if not os.path.exists(spec):
            raise MixtureError(f"{spec}: no such mixture file")
        name = "phi4_mixture_" + os.path.splitext(os.path.basename(spec))[0]
        module_spec = importlib.util.spec_from_file_location(name, spec)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:  # a module name; a bare name means data_mixtures.<name>
        module = importlib.import_module(spec if "." in spec else f"data_mixtures.{spec}")
    mixture = getattr(module, "MIXTURE", None)
    if not isinstance(mixture, Mixture):
        raise MixtureError(f"{spec}: defines no MIXTURE of type phi4_jax.data.mixture.Mixture")
    return mixture
