"""The one place this package imports seqio and TensorFlow (on first use, never at import)."""

from __future__ import annotations

import functools
from typing import Any

INSTALL_HINT = "pip install -e '.[seqio]' (seqio and TensorFlow)"


@functools.cache
def require() -> tuple[Any, Any]:
    """(seqio, tensorflow); ImportError naming the extra when they are not installed."""
    try:
        import seqio  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(f"phi4_jax.seqio needs the [seqio] extra: {INSTALL_HINT} ({e})") from e
    return seqio, tf


def token_feature(vocab_size: int, *, required: bool = True) -> Any:
    """An already-tokenized int32 feature: a PassThroughVocabulary (ids in, ids out), no EOS
    added (token stores already end each document the way prepare wrote it)."""
    seqio, tf = require()
    return seqio.Feature(seqio.PassThroughVocabulary(vocab_size), add_eos=False,
                         required=required, dtype=tf.int32)


def add_task(name: str, **kwargs: Any) -> Any:
    """seqio.TaskRegistry.add, replacing a Task (or Mixture) registered under the same name
    (registering again replaces it, as phi4_jax.data.mixture.register_mixture does)."""
    seqio, _ = require()
    seqio.TaskRegistry.remove(name)
    seqio.MixtureRegistry.remove(name)
    return seqio.TaskRegistry.add(name, **kwargs)
