"""What `--model=PATH` names, loaded: the model and the tokenizer that comes with it.

    served = load("SmolLM2-135M-Instruct.Q4_1.gguf")    # a GGUF file
    served = load("hf_dir/")                              # config.json + *.safetensors
    served = load("workdirs/tiny_sft", step=None)         # a training work dir, newest step
    served.model, served.codec, served.name

- a `.gguf` file: `phi4_jax.load_gguf` (dequantized, float32 unless `dtype`); the file's own
  tokenizer and jinja chat template (`GGUFTokenizer`).
- a Hugging Face directory: `phi4_jax.load_hf` (the checkpoint's dtype unless `dtype`);
  tokenizer.json + tokenizer_config.json (template, eos), else Phi-4's for Phi-4's vocabulary.
- a training work dir: config.json's model section + `train.checkpoint.restore_params` (the
  newest restorable step, or `step`); Phi-4's tokenizer and ChatML with `<|im_sep|>`.

`param_dtype="bfloat16"` stores the weights in bfloat16 (`inference.dtypes.with_dtypes`): the
decode kernel streams half the bytes and activations keep the compute dtype.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from phi4_jax.cli import UsageError
from phi4_jax.serve.codecs import Codec, GGUFCodec, HFCodec, Phi4Codec


@dataclasses.dataclass
class Served:
    """A loaded model with its tokenizer (`codec`), the name clients use, and where it came
    from (`kind`: gguf, hf or workdir; `source`: the file or step directory read)."""

    model: Any
    codec: Codec
    name: str
    kind: str
    source: str


def kind_of(path: str) -> str:
    """'gguf', 'hf' or 'workdir' for an existing PATH (UsageError otherwise)."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
        raise UsageError(f"--model={path}: not a GGUF file (a file must be .gguf; a Hugging "
                         "Face checkpoint or a training work dir is a directory)")
    if not os.path.isdir(path):
        raise UsageError(f"--model={path}: no such file or directory")
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return "workdir"
    config = os.path.join(path, "config.json")
    if not os.path.exists(config):
        raise UsageError(f"--model={path}: a directory needs config.json (a Hugging Face "
                         "checkpoint) or checkpoints/ (a training work dir)")
    with open(config, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data.get("model"), dict) and "preset" in data["model"]:
        return "workdir"
    return "hf"


def load(path: str, *, step: int | None = None, dtype: str | None = None,
         param_dtype: str | None = None, name: str | None = None) -> Served:
    """Loads PATH (see the module docstring); user mistakes raise UsageError."""
    kind = kind_of(path)
    if step is not None and kind != "workdir":
        raise UsageError(f"--step applies to a training work dir; {path} is a {kind} model")
    overrides = {"param_dtype": param_dtype} if param_dtype else {}
    name = name or os.path.basename(os.path.normpath(path))
    if kind == "gguf":
        from phi4_jax.convert.gguf import load_gguf

        model = load_gguf(path, dtype=dtype or "float32", **overrides)
        return Served(model, GGUFCodec(path), name, kind, path)
    if kind == "hf":
        from phi4_jax.convert.hf import load_hf

        try:
            model = load_hf(path, dtype=dtype, **overrides)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(f"--model={path}: {e}") from e
        return Served(model, hf_codec(path, model.config), name, kind, path)
    model, source = load_workdir(path, step=step)
    from phi4_jax.inference.dtypes import with_dtypes

    model = with_dtypes(model, dtype=dtype, param_dtype=param_dtype)
    return Served(model, phi4_codec(model.config, path), name, kind, source)


def hf_codec(path: str, config: Any) -> Codec:
    """The directory's tokenizer.json (+ tokenizer_config.json), or Phi-4's for its vocabulary."""
    if os.path.exists(os.path.join(path, "tokenizer.json")):
        return HFCodec(path, eos_id=config.eos_token_id, bos_id=config.bos_token_id)
    return phi4_codec(config, path)


def phi4_codec(config: Any, path: str) -> Codec:
    from phi4_jax.data.tokenizer import VOCAB_SIZE

    if config.vocab_size != VOCAB_SIZE:
        raise UsageError(f"--model={path}: no tokenizer files, and its vocabulary "
                         f"({config.vocab_size}) is not Phi-4's ({VOCAB_SIZE})")
    return Phi4Codec()


def load_workdir(path: str, *, step: int | None = None) -> tuple[Any, str]:
    """(model, step directory) of a training work dir: config.json's model section and the
    parameters of its newest restorable checkpoint, or of checkpoints/<step>."""
    import jax
    from flax import nnx

    from phi4_jax.model import abstract_model
    from phi4_jax.model.config import from_experiment
    from phi4_jax.train import checkpoint

    config_path = os.path.join(path, "config.json")
    if not os.path.exists(config_path):
        raise UsageError(f"--model={path}: a training work dir needs config.json")
    with open(config_path, encoding="utf-8") as f:
        experiment = json.load(f)
    try:
        config = from_experiment(experiment["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"--model={path}: config.json has no usable model section ({e})") from e
    steps = checkpoint.step_dirs(path)
    if not steps:
        raise UsageError(f"--model={path}: no checkpoints in {path}/checkpoints")
    if step is not None:
        chosen = [s for s in steps if s.name == str(step)]
        if not chosen:
            raise UsageError(f"--step={step}: {path} has steps "
                             f"{sorted(int(s.name) for s in steps)}")
        steps = chosen
    model = abstract_model(config)
    state = nnx.state(model, nnx.Param)
    abstract = nnx.to_pure_dict(state)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
    for step_dir in steps:  # newest first; a corrupt step falls back to the one before
        try:
            params = checkpoint.restore_params(str(step_dir), abstract, shardings)
        except FileNotFoundError:
            continue
        nnx.replace_by_pure_dict(state, params)
        nnx.update(model, state)
        return model, str(step_dir)
    raise UsageError(f"--model={path}: no restorable checkpoint among steps "
                     f"{sorted(int(s.name) for s in steps)}")
