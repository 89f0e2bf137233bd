"""--model=PATH for each kind: a Hugging Face directory and a training work dir (GGUF files are
what the other server tests serve). Each must give the model and the tokenizer that come with
it; a work dir serves its newest checkpoint or --step."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from phi4_jax.cli import UsageError
from phi4_jax.serve.codecs import HFCodec, Phi4Codec
from phi4_jax.serve.loading import kind_of, load
from tests.serve.conftest import write_hf_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hf_dir(smollm2, tmp_path_factory):
    """SmolLM2 written as a Hugging Face directory: safetensors + tokenizer files."""
    return write_hf_dir(smollm2, tmp_path_factory.mktemp("smollm2_hf"))


def test_a_hugging_face_directory_brings_its_tokenizer_and_template(smollm2, hf_dir):
    served = load(hf_dir, name="hf")
    assert served.kind == "hf" and isinstance(served.codec, HFCodec)
    text = "The capital of France is <|im_end|> Paris"
    assert served.codec.encode(text) == smollm2.codec.encode(text)
    chat = [{"role": "user", "content": "Hi there"}]
    assert served.codec.render_chat(chat) == smollm2.codec.render_chat(chat)
    assert served.codec.eos_id == smollm2.codec.eos_id == 2
    assert served.codec.stop_ids == smollm2.codec.stop_ids
    ids = np.asarray([smollm2.codec.encode(text)])
    np.testing.assert_allclose(np.asarray(served.model(ids)), np.asarray(smollm2.model(ids)),
                               atol=1e-4)
    with pytest.raises(UsageError, match="--step applies to a training work dir"):
        load(hf_dir, step=3)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Two steps of the tiny preset (Phi-4's vocabulary) on synthetic data, a checkpoint each."""
    import experiments
    from phi4_jax.train import loop

    c = experiments.get_config("tiny_pretrain")
    c.data.source = "synthetic"
    c.data.seq_len = 32
    c.optimizer.warmup_steps = 0
    c.train.update(dict(global_batch=2, steps=2, checkpoint_every=1, log_every=1, keep=3,
                        async_checkpoint=False))
    path = str(tmp_path_factory.mktemp("tiny_workdir"))
    loop.run(c, path, devices=jax.local_devices()[:1])
    return path


def test_a_work_dir_serves_its_newest_checkpoint_or_the_step_asked(workdir):
    from phi4_jax.data.chat import render

    assert kind_of(workdir) == "workdir"
    newest, first = load(workdir), load(workdir, step=1)
    assert newest.source.endswith("/2") and first.source.endswith("/1")
    assert isinstance(newest.codec, Phi4Codec) and newest.model.config.vocab_size == 100352
    a = jax.tree.leaves(nnx.state(newest.model, nnx.Param))
    b = jax.tree.leaves(nnx.state(first.model, nnx.Param))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b)), "steps 1 and 2 are equal"
    chat = [{"role": "user", "content": "Hello"}]
    want = render(chat, add_generation_prompt=True, require_assistant=False)[0].tolist()
    assert newest.codec.render_chat(chat) == want
    with pytest.raises(UsageError, match=r"has steps \[1, 2\]"):
        load(workdir, step=7)
    bf16 = load(workdir, param_dtype="bfloat16")
    assert bf16.model.config.param_dtype == "bfloat16"
