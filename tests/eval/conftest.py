"""SmolLM2-135M (real weights) for the harness tests: the GGUF model (`smollm2`, shared with
the server tests) and the same weights as a Hugging Face directory (`smollm2_hf`)."""

from __future__ import annotations

import pytest

from tests.serve.conftest import smollm2, write_hf_dir  # noqa: F401 - a shared fixture


@pytest.fixture(scope="session")
def smollm2_hf(smollm2, tmp_path_factory):  # noqa: F811
    return write_hf_dir(smollm2, tmp_path_factory.mktemp("smollm2_hf"))
