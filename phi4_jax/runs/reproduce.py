"""Rerunning a run from its record: `--reproduce=WORKDIR[@N]` of launch.local and launch.tpu.

    record = reproduce.load("workdirs/a@2")         # the 2nd launch's record (default: newest)
    config = reproduce.experiment_config(record)     # the recorded resolved config, exactly
    lines = reproduce.check("workdirs/a@2", record, config, strict=False)   # what differs now

The config is the record's resolved config itself, not the experiment file run again: the file
may have changed since (or may not exist here), and the record is what ran. It becomes a
ConfigDict whose fields keep their recorded values and types (lists as tuples; a None field
takes any `--exp.FIELD=VALUE` literal), so overrides still apply on top of it
(`--reproduce=A --exp.train.seed=1` is an ablation of A). A change in the code
(`experiments/*.py` included) shows as a code difference instead.

`check` compares the record with this checkout and machine: code (commit, dirty, diff hash),
packages (every distribution's version) and inputs (each token store's manifest fingerprint,
plus `TokenStore.verify_chunks` for a store rewritten in place; each input file's hash). Each
difference is one warning line; with strict=True any difference is a `cli.UsageError` naming
them all (one line, exit 2). The topology is compared when the run starts (it needs the mesh)
and only warned about.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from phi4_jax import cli
from phi4_jax.runs import collect, diff, history

STRICT_SECTIONS = ("code", "packages", "data")


def load(spec: str) -> dict[str, Any]:
    """The training record `spec` names ('WORKDIR' or 'WORKDIR@N')."""
    record = history.select(spec)
    if record.get("kind") != "train" or not isinstance(record.get("config"), Mapping):
        raise history.RecordError(f"--reproduce={spec}: launch {record.get('launch')} is a "
                                  f"{record.get('job')!r} record, not a training run's")
    return record


def _typed(value: Any) -> Any:
    from ml_collections import ConfigDict, config_dict

    if isinstance(value, Mapping):
        return ConfigDict({k: _typed(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_typed(v) for v in value)
    if value is None:
        return config_dict.placeholder(object)  # an override's literal gives the type
    return value


def experiment_config(record: Mapping[str, Any]) -> Any:
    """The record's resolved config as a ConfigDict that `--exp.FIELD=VALUE` can override."""
    return _typed(record["config"])


def source_ref(spec: str, record: Mapping[str, Any]) -> dict[str, Any]:
    workdir, _ = history.split_spec(spec)
    return {"spec": f"{workdir}@{record.get('launch')}", "workdir": workdir,
            "launch": record.get("launch"), "id": record.get("id")}


def current(config: Mapping[str, Any], stores: Mapping[str, Any]) -> dict[str, Any]:
    """The code, packages and inputs a run of `config` would have here, now; `stores`: what the
    caller found behind the config's data section (`phi4_jax.data.pipeline.mixture_stores`)."""
    return {"code": collect.code(), "packages": collect.packages(),
            "data": {"stores": stores, "files": collect.files(collect.config_inputs(config))}}


def check(spec: str, record: Mapping[str, Any], config: Any, *, strict: bool,
          stores: Mapping[str, Any], prog: str = "reproduce", out=None) -> list[str]:
    """Warns (on `out`, default stderr) about each difference between the record and a run of
    `config` here; with `strict`, raises cli.UsageError naming them instead. Returns them."""
    plain = json.loads(config.to_json_best_effort()) if hasattr(
        config, "to_json_best_effort") else dict(config)
    source = source_ref(spec, record)["spec"]
    found = diff.differences(record, current(plain, stores), STRICT_SECTIONS)
    if found and strict:
        raise cli.UsageError(
            f"--strict: {source} was recorded under other code, packages or inputs than this "
            f"checkout has: {'; '.join(found)} (without --strict the run goes ahead with these "
            "warnings)")
    out = out or sys.stderr
    for line in found:
        print(f"{prog}: warning: reproducing {source}: {line}", file=out, flush=True)
    return found
