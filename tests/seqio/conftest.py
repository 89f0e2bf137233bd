"""seqio tests: skipped without the [seqio] extra; TensorFlow is imported once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def seqio():
    """The seqio module (TensorFlow's import, several seconds, paid once)."""
    module = pytest.importorskip("seqio", reason="needs the [seqio] extra (seqio, TensorFlow)")
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # jax owns any accelerator
    return module
