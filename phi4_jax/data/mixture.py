"""Mixture declarations: sources (logical name -> token store), token fractions per stage, budget.

A mixture file is a Python module that defines `MIXTURE`, a `Mixture` (or, when its stores are
built on demand, `build_mixture(cache_dir) -> Mixture`). It only declares; `phi4_jax.data.plan`
turns it into epochs per source and `phi4_jax.data.pipeline` into batches. Example:

    MIXTURE = Mixture(
        name="example", total_tokens=10**12,
        sources=(Source("web", "web", unique_tokens=4e11), Source("code", "code", max_epochs=4)),
        stages=(Stage({"web": 0.7, "code": 0.3}, fraction=0.8),   # first 80% of the budget
                Stage({"web": 0.5, "code": 0.5}, fraction=0.2)))  # weights change at 80%

Fractions are shares of the token budget (not of documents or rows). Relative store paths
resolve against the `data_root` given at build time. Every field is type-checked when the
Mixture is built (a string weight, a string or NaN `unique_tokens`, a bool `max_epochs` ...):
`MixtureError` names the source or stage and the field, and `load_mixture` prefixes the file
(or module) the declaration came from.

`load_mixture(spec)` takes a Mixture, a mixture file path, a dotted module name or a name
registered with `register_mixture`. This library registers no names itself: the package that
declares mixtures does (the repository's data_mixtures/ registers each of its files by file name
when imported, and the experiments and launchers import it).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping

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
    heldout: a token store of held-out documents for this source's evaluation (held-out loss
      during training); None: a slice is carved out of `path` when a run asks for held-out
      rows (phi4_jax/data/heldout.py).
    """

    name: str
    path: str
    unique_tokens: float | None = None
    max_epochs: float | None = None
    packing: str = "concat"
    heldout: str | None = None


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
        if not isinstance(self.name, str):
            raise MixtureError(f"mixture name must be a string, got {_shown(self.name)}")
        where = f"mixture {self.name!r}"
        for field in ("sources", "stages"):
            value = getattr(self, field)
            if isinstance(value, str | Mapping) or not isinstance(value, Iterable):
                raise MixtureError(f"{where}: {field} must be a tuple, got {_shown(value)}")
            object.__setattr__(self, field, tuple(value))
        for s in self.sources:
            _check_source(s, where)
        names = [s.name for s in self.sources]
        if not names:
            raise MixtureError(f"{where}: no sources")
        if len(set(names)) != len(names):
            raise MixtureError(f"{where}: duplicate source names {names}")
        _number(self.total_tokens, f"{where}: total_tokens")
        if not self.total_tokens > 0:
            raise MixtureError(f"{where}: total_tokens must be > 0")
        if not self.stages:
            raise MixtureError(f"{where}: no stages")
        for k, stage in enumerate(self.stages):
            if not isinstance(stage, Stage):
                raise MixtureError(f"{where}, stage {k}: must be a Stage, got {_shown(stage)}")
            label = f"{where}, stage {k} {stage.name!r}"
            if not isinstance(stage.name, str):
                raise MixtureError(f"{where}, stage {k}: name must be a string, got "
                                   f"{_shown(stage.name)}")
            if not isinstance(stage.weights, Mapping):
                raise MixtureError(f"{label}: weights must be a mapping of source name -> "
                                   f"fraction, got {_shown(stage.weights)}")
            unknown = set(stage.weights) - set(names)
            if unknown:
                raise MixtureError(f"{label}: weights for unknown sources "
                                   f"{sorted(map(str, unknown))}")
            for source, w in stage.weights.items():
                _number(w, f"{label}: weight of source {source!r}")
            if any(not (w >= 0 and math.isfinite(w)) for w in stage.weights.values()):
                raise MixtureError(f"{label}: weights must be finite and >= 0")
            _number(stage.fraction, f"{label}: fraction")
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

        def absolute(path: str | None) -> str | None:
            return path if path is None or "://" in path else os.path.abspath(
                os.path.join(root, path))

        sources = tuple(dataclasses.replace(s, path=absolute(s.path), heldout=absolute(s.heldout))
                        for s in self.sources)
        return dataclasses.replace(self, sources=sources)

    def replace(self, **changes) -> Mixture:
        return dataclasses.replace(self, **changes)


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r:.40}"


def _number(value: object, what: str) -> None:
    """A finite int or float (not a bool, not a string), else MixtureError naming `what`."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value)):
        raise MixtureError(f"{what} must be a finite number, got {_shown(value)}")


def _check_source(s: object, where: str) -> None:
    """Every field of a Source has its declared type (MixtureError naming source and field)."""
    if not isinstance(s, Source):
        raise MixtureError(f"{where}: sources must be Source(...) entries, got {_shown(s)}")
    label = f"{where}, source {s.name!r}"
    for field in ("name", "path", "packing"):
        value = getattr(s, field)
        if not isinstance(value, str) or not value:
            raise MixtureError(f"{label}: {field} must be a non-empty string, got "
                               f"{_shown(value)}")
    if s.heldout is not None and (not isinstance(s.heldout, str) or not s.heldout):
        raise MixtureError(f"{label}: heldout must be a non-empty string (a store path) or "
                           f"None, got {_shown(s.heldout)}")
    if s.packing not in PACKING_MODES:
        raise MixtureError(f"{label}: packing {s.packing!r} not in {PACKING_MODES}")
    for field in ("unique_tokens", "max_epochs"):
        value = getattr(s, field)
        if value is not None:
            _number(value, f"{label}: {field}")
            if not value > 0:
                raise MixtureError(f"{label}: {field} must be > 0")


MixtureSpec = Mixture | str | Callable[[str], Mixture]
_REGISTRY: dict[str, MixtureSpec] = {}


def register_mixture(name: str, spec: MixtureSpec) -> None:
    """Makes `load_mixture(name)` resolve to `spec`: a Mixture, a mixture file path, a dotted
    module name or a function of the cache directory returning a Mixture. Registering a name
    again replaces it."""
    if not name or "." in name or os.sep in name or name.endswith(".py"):
        raise MixtureError(f"mixture name {name!r}: a registered name is a bare word (no '.', "
                           "no path separator)")
    if isinstance(spec, str) and not ("." in spec or os.sep in spec):
        raise MixtureError(f"mixture {name!r}: {spec!r} is neither a file path nor a dotted "
                           "module name")
    _REGISTRY[name] = spec


def registered_mixtures() -> list[str]:
    return sorted(_REGISTRY)


def default_cache_dir() -> str:
    """Where mixtures that build their stores on demand put them unless told: tempdir/phi4_data."""
    return os.path.join(tempfile.gettempdir(), "phi4_data")


def _module(spec: str):
    if spec.endswith(".py") or os.sep in spec:
        if not os.path.exists(spec):
            raise MixtureError(f"{spec}: no such mixture file")
        name = "phi4_mixture_" + os.path.splitext(os.path.basename(spec))[0]
        module_spec = importlib.util.spec_from_file_location(name, spec)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    if "." in spec:
        return importlib.import_module(spec)
    known = ", ".join(registered_mixtures()) or "none"
    raise MixtureError(f"unknown mixture {spec!r}: not a file path, not a dotted module name and "
                       f"not a registered name (registered: {known}). Pass a mixture file path, "
                       "or register the name with phi4_jax.data.mixture.register_mixture (the "
                       "repository's data_mixtures package registers its files when imported)")


def load_mixture(spec: MixtureSpec, *, cache_dir: str | None = None) -> Mixture:
    """The Mixture that `spec` names: a Mixture passes through; a function is called with the
    cache directory; a file path or dotted module name is loaded (its `build_mixture(cache_dir)`
    if it defines one, else its `MIXTURE`); any other string is a registered name.

    cache_dir: where on-demand stores are built (default: default_cache_dir()).
    """
    if isinstance(spec, Mixture):
        return spec
    cache_dir = cache_dir or default_cache_dir()
    if not callable(spec) and spec in _REGISTRY:
        return load_mixture(_REGISTRY[spec], cache_dir=cache_dir)
    try:  # an invalid declaration's error names the file (or module) it is in
        if callable(spec):
            mixture = spec(cache_dir)
        else:
            module = _module(spec)
            build = getattr(module, "build_mixture", None)
            mixture = build(cache_dir) if callable(build) else getattr(module, "MIXTURE", None)
    except MixtureError as e:
        origin = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
        if str(e).startswith((f"{origin}:", "unknown mixture")):
            raise
        raise MixtureError(f"{origin}: {e}") from e
    if not isinstance(mixture, Mixture):
        raise MixtureError(f"{spec}: defines no MIXTURE (or build_mixture) giving a "
                           "phi4_jax.data.mixture.Mixture")
    return mixture
