"""Workflows: a source of records and a tree of stages, built in Python or from a config file.

    wf = Workflow(name="qa", inputs=["questions.jsonl"],
                  models={"teacher": ModelConfig(model="phi-4", base_url=URL)},
                  stages=[llm_stage("answer", kind="chat", template=text, model="teacher"),
                          Stage("grade", grade_fn, model="teacher", templates={...})],
                  exports={"grade": "graded.jsonl"})
    wf = load_workflow("workflows/qa.py:small")          # a config file, as the CLI does

A config file is a Python file whose `get_config(arg=None)` returns a dict or an
ml_collections ConfigDict (the form of experiments/; docs/synth.md has one):

    name, inputs (JSONL paths or globs), id_field ("id"), shard_size (records per shard),
    cache (a path; default OUTPUT/cache.sqlite), models {name: ModelConfig fields},
    stages [{name, kind: chat | completions | python, ...}], exports {stage: file name}

`chat` / `completions` stages take template (a file), model, sampling, n, output_field, parse,
parse_retries; `python` stages take fn ("package.module:function"), templates {name: file},
model, params. Every stage takes version and input. Relative paths in a config file are relative
to the file. Template files are read when the workflow is built, so workers never need them.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

from phi4_jax.synth.client import ModelConfig
from phi4_jax.synth.stage import Stage, llm_stage
from phi4_jax.synth.templates import read_template


class ConfigError(ValueError):
    """A workflow config that cannot be built (a user error)."""


@dataclasses.dataclass(frozen=True)
class Workflow:
    name: str
    inputs: Sequence[str]
    stages: Sequence[Stage]
    models: Mapping[str, ModelConfig] = dataclasses.field(default_factory=dict)
    id_field: str = "id"
    shard_size: int = 256
    cache: str | None = None  # None: OUTPUT/cache.sqlite
    exports: Mapping[str, str] = dataclasses.field(default_factory=dict)  # stage -> file name

    def __post_init__(self):
        names = [s.name for s in self.stages]
        if not names:
            raise ConfigError(f"workflow {self.name}: no stages")
        if len(set(names)) != len(names):
            raise ConfigError(f"workflow {self.name}: stage names repeat: {names}")
        if self.shard_size < 1:
            raise ConfigError("shard_size must be >= 1")
        for s in self.stages:
            for m in [s.model] if s.model else []:
                if m not in self.models:
                    raise ConfigError(f"stage {s.name}: unknown model {m!r}; models are "
                                      f"{sorted(self.models)}")
        for stage in self.exports:
            if stage not in names:
                raise ConfigError(f"exports: no stage {stage!r}")
        self.parents()  # inputs name earlier stages

    def parents(self) -> dict[str, str | None]:
        """stage -> the stage it reads (None: the source); each parent comes earlier."""
        out: dict[str, str | None] = {}
        for i, s in enumerate(self.stages):
            parent = s.input if s.input is not None else (self.stages[i - 1].name if i else None)
            if parent == "source":
                parent = None
            if parent is not None and parent not in out:
                raise ConfigError(f"stage {s.name}: input {parent!r} is not an earlier stage")
            out[s.name] = parent
        return out

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def _resolve(path: str, base: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) or "://" in path else os.path.join(base, path)


def _function(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(f"fn {spec!r}: write it as package.module:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"fn {spec!r}: {e}") from None


def _stage(raw: Mapping[str, Any], base: str) -> Stage:
    raw = dict(raw)
    name, kind = raw.pop("name", None), raw.pop("kind", None)
    if not name:
        raise ConfigError(f"a stage without a name: {raw}")
    try:
        if kind in ("chat", "completions"):
            template = raw.pop("template", None)
            if not template:
                raise ConfigError(f"stage {name}: a {kind} stage needs template (a file)")
            return llm_stage(name, kind=kind, template=read_template(_resolve(template, base)),
                             **raw)
        if kind == "python":
            fn = _function(raw.pop("fn", ""))
            templates = {k: read_template(_resolve(v, base))
                         for k, v in dict(raw.pop("templates", {})).items()}
            return Stage(name, fn, templates=templates, **raw)
    except TypeError as e:  # an unknown field
        raise ConfigError(f"stage {name}: {e}") from None
    except OSError as e:
        raise ConfigError(f"stage {name}: cannot read a template: {e}") from None
    raise ConfigError(f"stage {name}: kind must be chat, completions or python, not {kind!r}")


def from_config(config: Mapping[str, Any], base_dir: str = ".") -> Workflow:
    """A Workflow from a config mapping (module docstring); relative paths from `base_dir`."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    known = {f.name for f in dataclasses.fields(Workflow)}
    if unknown := sorted(set(raw) - known):
        raise ConfigError(f"unknown workflow fields {unknown}; known: {sorted(known)}")
    try:
        models = {k: ModelConfig(**dict(v)) for k, v in dict(raw.get("models", {})).items()}
    except TypeError as e:
        raise ConfigError(f"models: {e}") from None
    inputs = raw.get("inputs", [])
    inputs = [_resolve(p, base_dir) for p in ([inputs] if isinstance(inputs, str) else inputs)]
    cache = raw.get("cache")
    return Workflow(
        name=raw.get("name") or "workflow", inputs=inputs, models=models,
        stages=[_stage(s, base_dir) for s in raw.get("stages", [])],
        id_field=raw.get("id_field", "id"), shard_size=int(raw.get("shard_size", 256)),
        cache=_resolve(cache, base_dir) if cache else None,
        exports=dict(raw.get("exports", {})))


def load_workflow(spec: str) -> Workflow:
    """`PATH[:ARG]`: the workflow of get_config(ARG) in the Python file PATH."""
    path, _, arg = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    module_spec = importlib.util.spec_from_file_location(
        f"phi4_synth_config_{abs(hash(os.path.abspath(path)))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config(arg=None)")
    config = module.get_config(arg) if arg else module.get_config()
    return from_config(config, os.path.dirname(os.path.abspath(path)))


def input_files(patterns: Sequence[str]) -> list[str]:
    """The input files, in the order given (a glob's matches sorted); a pattern naming nothing
    raises ConfigError."""
    files = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise ConfigError(f"inputs: no files match {pattern}")
            files += matches
        elif os.path.isfile(pattern):
            files.append(pattern)
        else:
            raise ConfigError(f"inputs: {pattern}: " + ("not a regular file"
                              if os.path.exists(pattern) else "no such file"))
    if not files:
        raise ConfigError("inputs: the workflow names no input files")
    return files
