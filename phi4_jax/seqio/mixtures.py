"""Mixtures as seqio Mixtures of seqio Tasks over our token stores.

    from phi4_jax.seqio import register_mixture
    mix = register_mixture("data_mixtures.embedded", cache_dir="/tmp/phi4_data")  # seqio.Mixture
    ds = mix.get_dataset(None, split="train", seed=0)    # {"targets": int32 [doc length]}

Each source becomes the Task "<mixture>.<source>" (default mixture name "phi4.<Mixture.name>")
whose split "train" yields the source's store documents, one example per document, exactly
as stored ({"targets": int32 ids}, a PassThroughVocabulary: already tokenized), and "validation"
its held-out store when the Source declares one. A Task reads documents in store order
(shuffle_files=False) or in a seeded permutation of the documents (shuffle_files=True); seqio's
own shuffle buffer comes after that.

Rates. A mixture's fractions are shares of tokens; a seqio Mixture samples examples (here
documents) with probability proportional to its rates. rates="tokens" (default) sets each
source's rate to fraction / mean document length, so the expected share of sampled tokens is
the configured fraction; rates="examples" uses the fractions themselves as rates (the share of
sampled documents is the fraction). `mixture_rates` gives the normalized rates, i.e. the
expected share of sampled examples per source. stage=None uses the whole budget's fractions
(Mixture.fractions(), every stage weighted by its fraction); stage=k (or a stage name) uses one
stage's weights. Sources at zero rate get a Task but are left out of the seqio Mixture.

What the seqio view does not carry: loss masks (SFT stores' masking stays in our pipeline),
packing (seqio's feature converters pack), exact epochs (seqio samples with replacement across
repeats) and the data-iterator checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from phi4_jax.data.mixture import Mixture, MixtureSpec, load_mixture
from phi4_jax.data.store import StoreReader, open_store, read_manifest
from phi4_jax.data.tokenizer import VOCAB_SIZE
from phi4_jax.seqio._deps import add_task, require, token_feature

RATE_MODES = ("tokens", "examples")
_INVALID_NAME = re.compile(r"[^\w.:#]")


def seqio_name(*parts: str) -> str:
    """A seqio registry name from parts joined by ".": characters seqio rejects become "_"."""
    return _INVALID_NAME.sub("_", ".".join(parts))


def _documents(store: StoreReader):
    """dataset_fn(split, shuffle_files, seed) over one store: one int32 example per document."""

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        _, tf = require()
        del split  # one store per split: the caller picks it

        def generate():
            count = store.num_documents
            order = np.random.default_rng(seed).permutation(count) if shuffle_files else \
                range(count)
            for d in order:
                yield {"targets": np.asarray(store.document(int(d)), np.int32)}

        return tf.data.Dataset.from_generator(
            generate, output_signature={"targets": tf.TensorSpec([None], tf.int32)})

    return dataset_fn


def register_store_task(name: str, path: str, *, heldout: str | None = None,
                        vocab_size: int = VOCAB_SIZE) -> Any:
    """Registers (or replaces) the seqio Task `name` over the token store at `path` (split
    "train") and, when given, the store `heldout` (split "validation"). Stores are opened now,
    so a missing or foreign store fails here (StoreError naming it), and with
    `vocab_size` so that ids >= vocab_size are refused."""
    seqio, _ = require()
    stores = {"train": open_store(path, vocab_size=vocab_size)}
    if heldout:
        stores["validation"] = open_store(heldout, vocab_size=vocab_size)
    functions = {split: _documents(store) for split, store in stores.items()}

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        return functions[split](split, shuffle_files, seed)

    source = seqio.FunctionDataSource(
        dataset_fn, splits=list(stores),
        num_input_examples={split: s.num_documents for split, s in stores.items()})
    return add_task(name, source=source, output_features={"targets": token_feature(vocab_size)},
                    preprocessors=[], metric_fns=[])


def _stage_weights(mixture: Mixture, stage: int | str | None) -> Mapping[str, float]:
    if stage is None:
        return mixture.fractions()
    if isinstance(stage, str):
        named = [k for k, s in enumerate(mixture.stages) if s.name == stage]
        if not named:
            raise ValueError(f"mixture {mixture.name!r} has no stage named {stage!r} (stages: "
                             f"{[s.name for s in mixture.stages]})")
        stage = named[0]
    if not 0 <= stage < len(mixture.stages):
        raise ValueError(f"mixture {mixture.name!r} has {len(mixture.stages)} stages, no "
                         f"stage {stage}")
    return mixture.stages[stage].weights


def mixture_rates(mixture: Mixture, doc_tokens: Mapping[str, float], *,
                  stage: int | str | None = None, rates: str = "tokens") -> dict[str, float]:
    """The expected share of sampled examples per source (sums to 1; zero-rate sources left
    out): fraction / mean document length normalized (rates="tokens"), or the fractions
    (rates="examples"). doc_tokens: each source's mean document length in tokens."""
    if rates not in RATE_MODES:
        raise ValueError(f"rates must be one of {RATE_MODES}, got {rates!r}")
    weights = _stage_weights(mixture, stage)
    raw = {}
    for name in mixture.source_names:
        w = float(weights.get(name, 0.0))
        if w > 0:
            raw[name] = w / doc_tokens[name] if rates == "tokens" else w
    total = sum(raw.values())
    return {name: r / total for name, r in raw.items()}


def register_mixture(spec: MixtureSpec, *, cache_dir: str | None = None,
                     data_root: str | None = None, stage: int | str | None = None,
                     rates: str = "tokens", name: str | None = None,
                     vocab_size: int = VOCAB_SIZE) -> Any:
    """Registers one Task per source and the seqio Mixture of them; returns the Mixture.

    spec: what phi4_jax.data.mixture.load_mixture takes (a Mixture, a mixture file, a dotted
      module, or a registered name: `import data_mixtures` first for the repository's names).
    cache_dir / data_root: where on-demand stores are built / relative store paths resolve.
    stage, rates: see the module docstring. name: the seqio Mixture name (default
      "phi4.<Mixture.name>", plus ".stage<k>" for one stage); its Tasks are "<name>.<source>".
    """
    seqio, _ = require()
    mixture = load_mixture(spec, cache_dir=cache_dir).resolve(data_root)
    if name is None:
        name = seqio_name("phi4", mixture.name) + ("" if stage is None else f".stage{stage}")
    tasks, doc_tokens = {}, {}
    for s in mixture.sources:
        task = register_store_task(seqio_name(name, s.name), s.path, heldout=s.heldout,
                                   vocab_size=vocab_size)
        manifest = read_manifest(s.path)
        doc_tokens[s.name] = manifest.num_tokens / max(manifest.num_documents, 1)
        tasks[s.name] = task
    shares = mixture_rates(mixture, doc_tokens, stage=stage, rates=rates)
    seqio.TaskRegistry.remove(name)
    seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, [(tasks[s], rate) for s, rate in shares.items()])
