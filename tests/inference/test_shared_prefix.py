"""Shared-prefix rollouts, per-row sampling and segment decoding (tiny random model).

`generate(prompts, n=k)` prefills each prompt once and decodes its k rows from that cache; it
must draw exactly the samples of the unshared path (each prompt repeated k times, the same row
ids), on both layer paths. `RowSampling` (per-row settings, the server's) must draw what a
static `SamplingConfig` draws, and `engine.Wave` (segments with a host round trip between) what
`generate` draws.
"""

import jax
import numpy as np
import pytest

from phi4_jax.inference import packed as packed_path
from phi4_jax.inference.decode import generate
from phi4_jax.inference.dtypes import with_dtypes
from phi4_jax.inference.engine import RowSpec, Wave
from phi4_jax.inference.sampling import RowSampling, SamplingConfig, draw
from phi4_jax.model import init_model, preset

VOCAB = 256
_RNG = np.random.default_rng(2)
PROMPTS = [_RNG.integers(0, VOCAB, n).tolist() for n in (6, 13, 3)]
HOT = SamplingConfig(temperature=1.0)
NUCLEUS = SamplingConfig(temperature=0.8, top_k=40, top_p=0.9)


@pytest.fixture(scope="module")
def model():
    return init_model(preset("tiny", dtype="float32", vocab_size=VOCAB, init_std=0.1), seed=0)


def _pair(model, sampling, n=4, **kw):
    """(shared, unshared) outputs for PROMPTS with n samples each and the same row ids."""
    ids = [1000 + 7 * r for r in range(len(PROMPTS) * n)]
    shared = generate(model, PROMPTS, n=n, max_new_tokens=10, sampling=sampling,
                      key=jax.random.key(4), row_ids=ids, **kw)
    unshared = generate(model, [p for p in PROMPTS for _ in range(n)], max_new_tokens=10,
                        sampling=sampling, key=jax.random.key(4), row_ids=ids, **kw)
    return shared, unshared


@pytest.mark.parametrize("sampling", [HOT, NUCLEUS], ids=["temperature", "top_k_top_p"])
@pytest.mark.parametrize("path", ["packed", "scanned"])
def test_shared_prefill_draws_the_unshared_samples(model, monkeypatch, sampling, path):
    if path == "scanned":
        monkeypatch.setattr(packed_path, "supports", lambda m, b: False)
    shared, unshared = _pair(model, sampling, stop_tokens=(5,))
    np.testing.assert_array_equal(shared.tokens, unshared.tokens)
    np.testing.assert_array_equal(shared.lengths, unshared.lengths)
    np.testing.assert_array_equal(shared.stopped, unshared.stopped)
    # Each prompt is prefilled alone and rows never mix: the log-probs are bitwise equal.
    np.testing.assert_array_equal(shared.logprobs, unshared.logprobs)
    rows = shared.to_lists()
    assert len({tuple(r) for r in rows[:4]}) > 1, "the n samples of a prompt must differ"


def test_shared_rows_match_the_full_forward(model):
    from tests.inference.test_decode import log_softmax, step_logits

    out = generate(model, PROMPTS, n=2, max_new_tokens=8, sampling=HOT, key=jax.random.key(1),
                   stop_tokens=(), return_logits=True)
    prompts = [p for p in PROMPTS for _ in range(2)]
    for b, ref in enumerate(step_logits(model, prompts, out.to_lists())):
        np.testing.assert_allclose(out.logits[b], ref, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(out.logprobs[b],
                                   log_softmax(ref)[np.arange(8), out.to_lists()[b]], atol=1e-5)


def test_row_sampling_draws_what_the_static_config_draws():
    logits = jax.random.normal(jax.random.key(0), (6, 300)) * 2.0
    keys = jax.random.split(jax.random.key(1), 6)
    configs = [HOT, NUCLEUS, SamplingConfig(0.0), SamplingConfig(1.3, top_p=0.5),
               SamplingConfig(0.7, top_k=3), HOT]
    mixed = draw(logits, keys, RowSampling.of(configs))
    for b, cfg in enumerate(configs):
        alone = draw(logits[b:b + 1], keys[b:b + 1], cfg)
        assert int(mixed[0][b]) == int(alone[0][0]), (b, cfg)
        np.testing.assert_allclose(float(mixed[1][b]), float(alone[1][0]), rtol=1e-6)


def test_a_wave_decodes_what_generate_decodes_and_cancels_rows(model):
    rows = [RowSpec(11, 0, HOT, 20), RowSpec(11, 1, HOT, 20), RowSpec(12, 0, NUCLEUS, 9),
            RowSpec(12, 1, SamplingConfig(0.0), 20), RowSpec(13, 0, HOT, 20), None]
    wave = Wave.start(model, PROMPTS, 2, rows, stop_tokens=(), pad_id=0, width=4, top_n=3)
    got = [[] for _ in rows]
    steps = 0
    while not wave.finished:
        seg = wave.advance(cancel=[4] if steps == 2 else [])
        steps += 1
        for b in range(len(rows)):
            got[b] += seg.tokens[b, :seg.count[b]].tolist()
            if seg.top_ids is not None and seg.count[b]:
                assert (seg.top_logprobs[b, :seg.count[b], 0] >= seg.logprobs[b, :seg.count[b]]
                        - 1e-6).all()
    first = generate(model, PROMPTS[:1], n=2, max_new_tokens=20, sampling=HOT,
                     key=jax.random.key(11), stop_tokens=()).to_lists()
    assert got[:2] == first
    second = generate(model, [PROMPTS[1]], max_new_tokens=9, sampling=NUCLEUS,
                      key=jax.random.key(12), stop_tokens=()).to_lists()
    assert got[2] == second[0]
    greedy = generate(model, [PROMPTS[1]], max_new_tokens=20, stop_tokens=()).to_lists()
    assert got[3] == greedy[0]
    assert len(got[4]) == 1 + 4  # the first token, one segment, then cancelled
    assert got[5] == []


def test_bfloat16_weights_keep_float32_activations(model):
    bf16 = with_dtypes(model, param_dtype="bfloat16")
    assert bf16.config.dtype == "float32" and bf16.config.param_dtype == "bfloat16"
    assert model.config.param_dtype == "float32"  # the original is unchanged
    if packed_path.uses_kernel(bf16.config):
        assert packed_path.decode_weights(bf16).layers[0].qkv.dtype == jax.numpy.bfloat16
    a = generate(model, PROMPTS, max_new_tokens=6, stop_tokens=(), return_logits=True)
    b = generate(bf16, PROMPTS, max_new_tokens=6, stop_tokens=(), return_logits=True)
    # Only the weights are rounded (relative 2^-9): logits move by well under a unit.
    assert float(np.abs(np.asarray(a.logits[:, 0]) - np.asarray(b.logits[:, 0])).max()) < 0.1
