"""Experiments: one module per experiment, each with `get_config(arg=None) -> ConfigDict`.

Run one with `python -m launch.local --exp=NAME --workdir=DIR` (NAME:ARG passes ARG).
"""

from __future__ import annotations

import importlib
import os

import data_mixtures  # noqa: F401 (registers the mixture names that configs' data.mixture give)

_HERE = os.path.dirname(os.path.abspath(__file__))
_NOT_EXPERIMENTS = {"__init__", "base"}


def names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(_HERE)
                  if f.endswith(".py") and f[:-3] not in _NOT_EXPERIMENTS)


def config_path(spec: str) -> str:
    """'NAME[:ARG]' -> '/abs/experiments/NAME.py[:ARG]'; paths to .py files pass through."""
    name, sep, arg = spec.partition(":")
    if name.endswith(".py") or os.sep in name:
        return spec
    if name not in names():
        raise ValueError(f"unknown experiment {name!r}; experiments are {names()}")
    return os.path.join(_HERE, f"{name}.py") + sep + arg


def get_config(spec: str):
    """The ConfigDict of experiment 'NAME[:ARG]'."""
    name, _, arg = spec.partition(":")
    config_path(name)  # validates the name
    module = importlib.import_module(f"experiments.{name}")
    return module.get_config(arg) if arg else module.get_config()
