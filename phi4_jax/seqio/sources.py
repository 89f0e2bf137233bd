"""A registered seqio Task as one of our mixture sources.

Our pipeline reads token stores (exact epochs, random access, content fingerprints for exact
resume), so a seqio Task becomes a source by being materialized once into a token store under
the cache directory; the mixture file then declares it like any other source:

    # data_mixtures/with_seqio.py
    import my_seqio_tasks  # noqa: F401  (registers "my_task" with seqio.TaskRegistry)
    from phi4_jax.seqio import seqio_source

    def build_mixture(cache_dir):
        return Mixture(name="with_seqio", total_tokens=1e9, sources=(
            Source("web", "/data/web"), seqio_source("my_task", cache_dir, name="seqio_task")),
            stages=(Stage({"web": 0.8, "seqio_task": 0.2}),))

The store is rewritten only when the request changes (task, split, feature, max_examples,
seed: recorded in its manifest's info["seqio"]) or with refresh=True. The Task is read once,
in its own order (shuffle=False) with a fixed seed, so every host that materializes it writes
the same content and fingerprint.

Features: an integer feature (the Task's vocabulary ids; they must be Phi-4 ids below
vocab_size, checked while writing) is stored as is; a string feature (e.g. an untokenized
"text" or "targets_pretokenized") is tokenized with the Phi-4 tokenizer as prepare does
(ordinary text, <|endoftext|> appended). Empty examples are skipped and counted in
info["seqio_skipped_empty"].
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from phi4_jax.data.mixture import Source
from phi4_jax.data.store import StoreError, read_manifest, write_store
from phi4_jax.data.tokenizer import VOCAB_SIZE, tokenize_documents
from phi4_jax.seqio._deps import require
from phi4_jax.seqio.mixtures import seqio_name


def _as_tokens(value: Any, where: str, vocab_size: int) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind in "SUO" and value.ndim == 0:  # text: tokenized as prepare does
        text = value.item()
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        if not text:
            return np.zeros(0, np.uint32)
        return np.asarray(tokenize_documents([text], num_threads=1)[0], np.uint32)
    if value.dtype.kind not in "iu" or value.ndim != 1:
        raise ValueError(f"{where}: expected a 1-D integer (token ids) or a string feature, "
                         f"got {value.dtype} with shape {value.shape}")
    if value.size and (int(value.min()) < 0 or int(value.max()) >= vocab_size):
        raise ValueError(f"{where}: token ids outside [0, {vocab_size}) (min {int(value.min())},"
                         f" max {int(value.max())}): the Task's vocabulary is not the model's; "
                         "use its text feature (tokenized here) instead")
    return value.astype(np.uint32)


def iter_task_documents(task: Any, *, split: str = "train", feature: str = "targets",
                        max_examples: int | None = None, seed: int = 0,
                        vocab_size: int = VOCAB_SIZE) -> Iterator[np.ndarray]:
    """The token ids (uint32) of `feature` in each example of a seqio Task (a registered name
    or a Task), one pass in the Task's order; empty examples yield empty arrays."""
    seqio, _ = require()
    task = seqio.TaskRegistry.get(task) if isinstance(task, str) else task
    if split not in task.splits:
        raise ValueError(f"seqio task {task.name!r} has no split {split!r} (splits: "
                         f"{list(task.splits)})")
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, seed=seed,
                          num_epochs=1)
    if max_examples is not None:
        ds = ds.take(max_examples)
    for n, example in enumerate(ds.as_numpy_iterator()):
        if feature not in example:
            raise ValueError(f"seqio task {task.name!r}: example {n} has no feature {feature!r} "
                             f"(features: {sorted(example)})")
        yield _as_tokens(example[feature], f"seqio task {task.name!r}, example {n}, "
                         f"feature {feature!r}", vocab_size)


def seqio_source(task_name: str, cache_dir: str, *, split: str = "train",
                 feature: str = "targets", name: str | None = None,
                 max_examples: int | None = None, seed: int = 0, refresh: bool = False,
                 vocab_size: int = VOCAB_SIZE, **fields: Any) -> Source:
    """A Source over the registered seqio Task `task_name`, materialized (once) into the token
    store cache_dir/seqio/<task>.<split>.<feature>. name: the source's name (default: the
    task name); fields: the other Source fields (max_epochs, packing, heldout)."""
    request = {"task": task_name, "split": split, "feature": feature,
               "max_examples": max_examples, "seed": seed}
    path = os.path.join(cache_dir, "seqio", seqio_name(task_name, split, feature))
    manifest = None
    if not refresh:
        try:
            manifest = read_manifest(path)
        except StoreError:
            manifest = None
    if manifest is None or manifest.info.get("seqio") != request:
        info: dict[str, Any] = {"seqio": request, "seqio_skipped_empty": 0}

        def documents() -> Iterator[np.ndarray]:
            for doc in iter_task_documents(task_name, split=split, feature=feature,
                                           max_examples=max_examples, seed=seed,
                                           vocab_size=vocab_size):
                if doc.size:
                    yield doc
                else:
                    info["seqio_skipped_empty"] += 1

        manifest = write_store(path, name or task_name, documents(), info=info)
        if not manifest.num_documents:
            raise ValueError(f"seqio task {task_name!r} ({split}, {feature}): no non-empty "
                             "examples to make a source of")
    source = Source(name=name or task_name, path=path, unique_tokens=manifest.num_tokens)
    return dataclasses.replace(source, **fields)
