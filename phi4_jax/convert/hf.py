"""Hugging Face safetensors <-> phi4_jax parameters, streamed tensor by tensor.

Import never holds more than the target parameters plus one HF tensor (per leaf under
construction): HF files are memory-mapped by safetensors and each of our leaves is built with
`jax.make_array_from_callback`, so on a mesh every device reads only its own shard. Export writes
one shard file at a time.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from phi4_jax.convert import hf_names
from phi4_jax.convert.hf_config import checkpoint_dtype, from_hf_config, to_hf_config
from phi4_jax.model import ModelConfig, Transformer, abstract_model

log = logging.getLogger(__name__)
# Tensors some exporters write that carry no parameters.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class TensorSource(Protocol):
    """Read access to named tensors in HF layout ([out, in] for linear weights)."""

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def get(self, name: str) -> np.ndarray: ...


class SafetensorsSource:
    """All tensors of a HF checkpoint directory (single file or sharded with an index)."""

    def __init__(self, path: str):
        self.path = path
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map: dict[str, str] = json.load(f)["weight_map"]
        elif os.path.exists(os.path.join(path, "model.safetensors")):
            weight_map = {}
            with safe_open(os.path.join(path, "model.safetensors"), framework="numpy") as f:
                weight_map = dict.fromkeys(f.keys(), "model.safetensors")
        else:
            raise FileNotFoundError(
                f"{path}: no model.safetensors or model.safetensors.index.json")
        self._files = {}
        for file in sorted(set(weight_map.values())):
            full = os.path.join(path, file)
            if not os.path.exists(full):
                raise FileNotFoundError(f"{index}: shard {file} listed in weight_map is missing")
            self._files[file] = safe_open(full, framework="numpy")
        self._where = weight_map

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._files[self._where[name]].get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        return self._files[self._where[name]].get_tensor(name)

    def dtypes(self) -> list[str]:
        """Every tensor's safetensors dtype code ("F32", "BF16", ...), in the index's order."""
        return [self._files[file].get_slice(name).get_dtype()
                for name, file in self._where.items()]


def check_tensors(source: TensorSource, config: ModelConfig, architecture: str,
                  where: str) -> None:
    """Raises ValueError naming every missing, unexpected or mis-shaped tensor."""
    expected = hf_names.hf_tensors(config, architecture)
    present = {n for n in source.names() if not n.endswith(_IGNORED_SUFFIXES)}
    problems = []
    missing = [n for n in expected if n not in present]
    extra = sorted(present - set(expected))
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}"
                        + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    if extra:
        problems.append(f"unexpected tensors: {', '.join(extra[:8])}"
                        + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else ""))
    for name, t in expected.items():
        if name in present and source.shape(name) != t.shape:
            problems.append(f"tensor {name} has shape {source.shape(name)}, expected {t.shape} "
                            f"for {architecture} with this config")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


def build_model(source: TensorSource, config: ModelConfig, architecture: str,
                shardings: Mapping[hf_names.Path, jax.sharding.Sharding] | None = None
                ) -> Transformer:
    """Builds a Transformer whose parameters are read from `source` leaf by leaf.

    `shardings` maps parameter paths (e.g. ("blocks", "attn", "q")) to a `jax.sharding.Sharding`;
    each device then reads only its own slice. Default: the first local device.
    """
    model = abstract_model(config)
    param_state = nnx.state(model, nnx.Param)
    by_path: dict[hf_names.Path, list[hf_names.Group]] = {}
    for g in hf_names.groups(config, architecture):
        by_path.setdefault(g.path, []).append(g)
    abstract = {_key(p): v.get_value() for p, v in nnx.to_flat_state(param_state)}
    if set(abstract) != set(by_path):  # a hf_names/model mismatch is a programming error
        raise AssertionError(f"hf_names.groups covers {sorted(by_path)}, model has "
                             f"{sorted(abstract)}")
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    cache: dict[str, np.ndarray] = {}

    def read(group: hf_names.Group) -> np.ndarray:
        arrays = []
        for t in group.tensors:
            if t.name not in cache:  # keep one HF tensor: fused ones serve q/k/v, gate/up
                cache.clear()
                cache[t.name] = np.asarray(source.get(t.name), dtype=np.float32)
            arrays.append(cache[t.name])
        return group.to_ours(arrays)

    values: dict = {}
    for path, spec in abstract.items():
        shape, dtype = spec.shape, spec.dtype
        groups_here = by_path[path]

        def callback(index, groups_here=groups_here, shape=shape, dtype=dtype):
            if groups_here[0].layer is None:
                return read(groups_here[0]).astype(dtype)[index]
            layers = range(shape[0])[index[0]]
            out = np.empty((len(layers), *[len(range(n)[i]) for n, i in
                                           zip(shape[1:], index[1:])]), dtype)
            for j, layer in enumerate(layers):
                out[j] = read(groups_here[layer])[index[1:]]
            return out

        sharding = (shardings or {}).get(path, default)
        node = values
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jax.make_array_from_callback(shape, sharding, callback)
    cache.clear()
    nnx.replace_by_pure_dict(param_state, values)
    nnx.update(model, param_state)
    return model


def _key(path) -> hf_names.Path:
    return tuple(str(k) for k in path)


def load_hf(path: str, *, dtype: str | None = None, shardings: Any = None,
            **config_overrides: Any) -> Transformer:
    """Loads a Hugging Face Phi3/Llama/Mistral causal-LM directory into a Transformer.

    The model computes in `dtype`; by default (None) in the checkpoint's own dtype, as
    transformers' `dtype="auto"`: config.json's `dtype` / `torch_dtype`, else the safetensors
    headers' (see `hf_config.checkpoint_dtype`), so a float32 checkpoint computes in float32
    and a bfloat16 one in bfloat16. Parameters are stored in `param_dtype` (default float32)
    whatever the file holds. `config_overrides` replace other ModelConfig fields (e.g.
    remat="full", param_dtype="bfloat16"); `shardings` as in `build_model`.
    """
    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{path}: no config.json")
    with open(config_path) as f:
        hf = json.load(f)
    source = SafetensorsSource(path)
    try:
        config = from_hf_config(hf, dtype=dtype or checkpoint_dtype(hf, source.dtypes()),
                                **config_overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{config_path}: {e}") from e
    architecture = (hf.get("architectures") or ["Phi3ForCausalLM"])[0]
    check_tensors(source, config, architecture, path)
    return build_model(source, config, architecture, shardings)


def iter_params(model: Transformer) -> Mapping[hf_names.Path, jax.Array]:
    state = nnx.state(model, nnx.Param)
    return {_key(p): v.get_value() for p, v in nnx.to_flat_state(state)}


def export_arrays(model: Transformer, architecture: str = "Phi3ForCausalLM",
                  dtype: Any = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (HF name, numpy array) for every tensor of the model, one at a time."""
    params = iter_params(model)
    out_dtype = np.dtype(dtype) if dtype is not None else None

    def leaf(path: hf_names.Path, layer: int | None) -> np.ndarray:
        value = params[path] if layer is None else params[path][layer]
        return np.asarray(jax.device_get(value))

    for name, arr in hf_names.export_tensors(model.config, architecture, leaf):
        yield name, (arr.astype(out_dtype) if out_dtype is not None else arr)


def save_hf(model: Transformer, path: str, *, architecture: str = "Phi3ForCausalLM",
            max_shard_bytes: int = 5 * 2**30, dtype: Any = None) -> None:
    """Writes `model` as a Hugging Face checkpoint directory transformers can load.

    Shards of at most `max_shard_bytes` with `model.safetensors.index.json` (or a single
    `model.safetensors`); `dtype` (e.g. "bfloat16") casts on the way out.
    """
    os.makedirs(path, exist_ok=True)
    config = model.config
    hf = to_hf_config(config, architecture)
    if dtype is not None:
        hf["torch_dtype"] = hf["dtype"] = str(np.dtype(jnp.dtype(dtype)))
    weight_map: dict[str, int] = {}
    current: dict[str, np.ndarray] = {}
    size = total = 0
    tmp_names: list[str] = []

    def flush():
        nonlocal current, size
        if current:
            tmp = os.path.join(path, f".shard-{len(tmp_names):05d}.tmp")
            save_file(current, tmp, metadata={"format": "pt"})
            tmp_names.append(tmp)
        current, size = {}, 0

    for name, arr in export_arrays(model, architecture, jnp.dtype(dtype) if dtype else None):
        if current and size + arr.nbytes > max_shard_bytes:
            flush()
        current[name] = arr
        weight_map[name] = len(tmp_names)
        size += arr.nbytes
        total += arr.nbytes
    flush()
    count = len(tmp_names)
    if count == 1:
        os.replace(tmp_names[0], os.path.join(path, "model.safetensors"))
        stale = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(stale):
            os.remove(stale)
    else:
        shard_names = [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        for tmp, final in zip(tmp_names, shard_names):
            os.replace(tmp, os.path.join(path, final))
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: shard_names[v] for k, v in weight_map.items()}}
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    gen = {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf.get(k)
           is not None}
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    log.info("saved %s (%d shard(s), %.2f GB)", path, count, total / 1e9)
