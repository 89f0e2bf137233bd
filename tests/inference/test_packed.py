"""Packed per-layer decoding (`inference.packed`) against the scanned decode path and its cache."""

import jax
import numpy as np
import pytest
from flax import nnx

from phi4_jax.inference import decode, kernels
from phi4_jax.inference import packed as packed_path
from phi4_jax.inference.decode import generate
from phi4_jax.inference.sampling import SamplingConfig
from phi4_jax.model import init_model, preset

VOCAB = 256
_RNG = np.random.default_rng(1)
PROMPTS = [_RNG.integers(0, VOCAB, n).tolist() for n in (7, 3, 15, 1)]


@pytest.fixture(scope="module")
def model():
    return init_model(preset("tiny", dtype="float32", vocab_size=VOCAB, init_std=0.1), seed=0)


def _both(model, monkeypatch, **kw):
    """generate(**kw) with packed weights, then with the scanned stack."""
    assert packed_path.supports(model, 4)
    packed = generate(model, PROMPTS, **kw)
    monkeypatch.setattr(packed_path, "supports", lambda m, b: False)
    scanned = generate(model, PROMPTS, **kw)
    return packed, scanned


def _matrix(w, n):
    """A packed matrix [K, n] from its panels [P, K, 32] (or as stored without the kernel)."""
    w = np.asarray(w)
    return w if w.ndim == 2 else w.transpose(1, 0, 2).reshape(w.shape[1], -1)[:, :n]


def test_the_cpu_kernel_is_built_and_used_for_float32_models(model):
    # CI has a C++ compiler: the decode path under test below is the kernel's.
    assert kernels.available()
    assert packed_path.uses_kernel(model.config)
    assert packed_path.max_packed_batch(model.config) == packed_path.MAX_PACKED_BATCH
    assert packed_path.decode_weights(model).layers[0].qkv.ndim == 3


@pytest.mark.parametrize("kernel", [True, False], ids=["cpu_kernel", "xla_dot"])
def test_packed_path_matches_scanned_path(model, monkeypatch, kernel):
    if not kernel:
        monkeypatch.setattr(packed_path, "uses_kernel", lambda cfg: False)
        packed_path._PACKED.pop(model, None)
    packed, scanned = _both(model, monkeypatch, max_new_tokens=12, stop_tokens=(),
                            return_logits=True)
    packed_path._PACKED.pop(model, None)
    np.testing.assert_array_equal(packed.tokens, scanned.tokens)
    np.testing.assert_allclose(packed.logits, scanned.logits, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(packed.logprobs, scanned.logprobs, atol=1e-5)


def test_packed_path_matches_scanned_path_at_the_largest_packed_batch(model, monkeypatch):
    limit = packed_path.max_packed_batch(model.config)
    rows = [_RNG.integers(0, VOCAB, 1 + i % 9).tolist() for i in range(limit)]
    assert packed_path.supports(model, limit)
    packed = generate(model, rows, max_new_tokens=6, stop_tokens=(), return_logits=True)
    monkeypatch.setattr(packed_path, "supports", lambda m, b: False)
    scanned = generate(model, rows, max_new_tokens=6, stop_tokens=(), return_logits=True)
    np.testing.assert_array_equal(packed.tokens, scanned.tokens)
    np.testing.assert_allclose(packed.logits, scanned.logits, atol=2e-5, rtol=1e-5)


def test_packed_path_matches_scanned_path_when_sampling(model, monkeypatch):
    cfg = SamplingConfig(temperature=1.0, top_p=0.9)
    packed, scanned = _both(model, monkeypatch, max_new_tokens=9, sampling=cfg,
                            key=jax.random.key(5), stop_tokens=(3, 4))
    np.testing.assert_array_equal(packed.tokens, scanned.tokens)
    np.testing.assert_array_equal(packed.lengths, scanned.lengths)
    np.testing.assert_array_equal(packed.stopped, scanned.stopped)


def test_large_batches_and_models_keep_the_scan(model, monkeypatch):
    assert not packed_path.supports(model, packed_path.max_packed_batch(model.config) * 2)
    monkeypatch.setattr(packed_path, "MAX_PACKED_BYTES", 0)
    assert not packed_path.supports(model, 1)


def test_packed_weights_are_cached_until_the_parameters_change(model):
    first = packed_path.decode_weights(model)
    assert packed_path.decode_weights(model) is first
    cfg = model.config
    assert len(first.layers) == cfg.num_layers
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    a = model.blocks.attn
    qkv = np.concatenate([np.asarray(a.q[...][0]).reshape(d, -1),
                          np.asarray(a.k[...][0]).reshape(d, -1),
                          np.asarray(a.v[...][0]).reshape(d, -1)], axis=1)
    np.testing.assert_array_equal(_matrix(first.layers[0].qkv, (n + 2 * k) * h), qkv)
    gate_up = _matrix(first.layers[0].gate_up, 2 * cfg.mlp_dim)
    np.testing.assert_array_equal(gate_up[:, :cfg.mlp_dim], model.blocks.mlp.gate[...][0])
    np.testing.assert_array_equal(gate_up[:, cfg.mlp_dim:], model.blocks.mlp.up[...][0])
    vocab = (model.embed.embedding[...].T if cfg.tie_embeddings else model.lm_head[...])
    np.testing.assert_array_equal(_matrix(first.vocab, cfg.vocab_size), vocab)
    np.testing.assert_array_equal(_matrix(first.layers[1].down, d), model.blocks.mlp.down[...][1])

    changed = nnx.clone(model)
    changed.blocks.mlp.down[...] = changed.blocks.mlp.down[...] * 2.0
    repacked = packed_path.decode_weights(changed)
    assert repacked is not first
    np.testing.assert_array_equal(_matrix(repacked.layers[1].down, cfg.embed_dim),
                                  2.0 * _matrix(first.layers[1].down, cfg.embed_dim))
    packed_path.decode_weights(model)  # the original model's cache entry is its own
    assert packed_path.decode_weights(model) is first


def test_packed_path_compiles_once_per_bucket(model):
    generate(model, PROMPTS, max_new_tokens=5, stop_tokens=())
    size = decode._generate_jit._cache_size()
    generate(model, PROMPTS[:3], max_new_tokens=16, stop_tokens=(9,))
    assert decode._generate_jit._cache_size() == size


def test_bfloat16_model_decodes_with_bfloat16_panels(monkeypatch):
    model = init_model(preset("tiny", dtype="bfloat16", vocab_size=VOCAB, init_std=0.1), seed=0)
    assert packed_path.uses_kernel(model.config)
    assert packed_path.decode_weights(model).layers[0].qkv.dtype == jax.numpy.bfloat16
    packed, scanned = _both(model, monkeypatch, max_new_tokens=6, stop_tokens=(),
                            return_logits=True)
    # Both in bfloat16; the kernel accumulates in float32 and rounds once per product, XLA's
    # bf16 dots round differently: logits agree to bfloat16 precision of their scale.
    scale = float(np.abs(np.asarray(scanned.logits[:, 0])).max())
    np.testing.assert_allclose(packed.logits[:, 0], scanned.logits[:, 0], atol=0.03 * scale)
    np.testing.assert_array_equal(packed.tokens[:, 0], scanned.tokens[:, 0])
