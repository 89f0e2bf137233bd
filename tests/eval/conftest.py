"""SmolLM2-135M (real weights) for the harness tests: the GGUF model (`smollm2`, shared with
the server tests) and the same weights as a Hugging Face directory (`smollm2_hf`); and `served`,
a tiny random model over bytes (test_harness.ByteCodec), compiled once per module."""

from __future__ import annotations

import types

import pytest

from tests.serve.conftest import smollm2, write_hf_dir  # noqa: F401 - a shared fixture


@pytest.fixture(scope="session")
def smollm2_hf(smollm2, tmp_path_factory):  # noqa: F811
    return write_hf_dir(smollm2, tmp_path_factory.mktemp("smollm2_hf"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from phi4_jax.model import init_model
    from phi4_jax.model.config import preset
    from tests.eval.test_harness import ByteCodec

    model = init_model(preset("tiny", dtype="float32", vocab_size=258, init_std=0.1,
                              max_seq_len=512), seed=0)
    source = tmp_path_factory.mktemp("tiny") / "weights"
    source.write_text("random init, seed 0")
    return types.SimpleNamespace(model=model, codec=ByteCodec(), name="tiny", kind="test",
                                 source=str(source))
