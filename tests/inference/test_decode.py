"""KV-cache decoding against the full forward pass, sampling invariants, scoring, compile reuse.

References are independent of the decode path: the model's full (uncached) forward pass on the
prompt + generated tokens, and numpy (float64) softmax / log_softmax / nucleus sets.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phi4_jax.inference import decode
from phi4_jax.inference.decode import bucket, generate, score, special_ids, token_logprobs
from phi4_jax.inference.sampling import SamplingConfig, sample
from phi4_jax.model import init_model, preset

VOCAB = 256
NEW = 12  # max_new_tokens used throughout (one 16-step bucket)
_RNG = np.random.default_rng(0)
PROMPTS = [_RNG.integers(0, VOCAB, n).tolist() for n in (5, 2, 13, 9)]


@pytest.fixture(scope="module")
def model():
    # init_std 0.1 gives logits with std ~1: distributions neither flat nor one-hot.
    return init_model(preset("tiny", dtype="float32", vocab_size=VOCAB, init_std=0.1), seed=0)


@nnx.jit
def _forward(model, tokens):
    return model(tokens)


def full_logits_batch(model, seqs) -> list[np.ndarray]:
    """Full forward logits of each sequence (right-padded to a 32 or 192 wide batch; causal)."""
    width = 32 if max(len(s) for s in seqs) <= 32 else 192
    ids = np.zeros((len(seqs), width), np.int32)
    for b, seq in enumerate(seqs):
        ids[b, :len(seq)] = seq
    out = np.asarray(_forward(model, jnp.asarray(ids)), np.float64)
    return [out[b, :len(seq)] for b, seq in enumerate(seqs)]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def step_logits(model, prompts, generated) -> list[np.ndarray]:
    """Per row, the full-forward logits [len(generated[b]), V] that predicted each token."""
    full = full_logits_batch(model, [list(p) + list(g) for p, g in zip(prompts, generated)])
    return [f[len(p) - 1:len(p) - 1 + len(g)] for f, p, g in zip(full, prompts, generated)]


def allowed(logits: np.ndarray, cfg: SamplingConfig) -> np.ndarray:
    """Boolean [V]: tokens the config may draw (numpy reference of temperature/top-k/top-p)."""
    z = logits / cfg.temperature
    order = np.argsort(-z, kind="stable")
    cand = order[:cfg.top_k] if cfg.top_k else order
    p = np.exp(z[cand] - z[cand].max())
    p /= p.sum()
    before = np.cumsum(p) - p
    keep = np.zeros(z.shape, bool)
    nucleus = before < cfg.top_p + 1e-6 if cfg.top_p < 1 else np.ones(cand.size, bool)
    keep[cand[nucleus]] = True
    return keep


# -- cached decoding == full forward ---------------------------------------------------------
def test_cached_logits_match_full_forward_every_step(model):
    out = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=(), return_logits=True)
    assert out.tokens.shape == (4, NEW) and out.logits.shape == (4, NEW, VOCAB)
    refs = step_logits(model, PROMPTS, out.to_lists())
    for b, ref in enumerate(refs):
        gen = out.to_lists()[b]
        assert len(gen) == NEW
        np.testing.assert_allclose(out.logits[b], ref, atol=2e-5, rtol=1e-5)
        assert gen == ref.argmax(-1).tolist()  # greedy is argmax of the full forward
        np.testing.assert_allclose(out.logprobs[b], log_softmax(ref)[np.arange(NEW), gen],
                                   atol=1e-5)
    assert (np.asarray(out.lengths) == NEW).all() and not np.asarray(out.stopped).any()


def test_padded_array_input_matches_ragged_lists(model):
    lists = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=())
    lens = [len(p) for p in PROMPTS]
    arr = np.full((4, 14), 77, np.int32)  # padding content must not matter
    for b, p in enumerate(PROMPTS):
        arr[b, :len(p)] = p
    padded = generate(model, arr, prompt_lengths=lens, max_new_tokens=NEW, stop_tokens=())
    np.testing.assert_array_equal(lists.tokens, padded.tokens)
    np.testing.assert_allclose(lists.logprobs, padded.logprobs, atol=1e-6)


# -- sampling --------------------------------------------------------------------------------
SAMPLERS = {
    "top_k": SamplingConfig(temperature=1.5, top_k=3),
    "top_p": SamplingConfig(temperature=1.0, top_p=0.6),
    "top_k_top_p": SamplingConfig(temperature=0.8, top_k=20, top_p=0.7),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampled_tokens_stay_in_the_allowed_set(model, name):
    cfg = SAMPLERS[name]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[2], PROMPTS[2]]  # each prompt sampled twice
    out = generate(model, prompts, max_new_tokens=NEW, sampling=cfg, key=jax.random.key(3),
                   stop_tokens=())
    rows = out.to_lists()
    assert rows[0] != rows[1] and rows[2] != rows[3], "rows with one prompt drew the same"
    greedy = generate(model, prompts, max_new_tokens=NEW, stop_tokens=()).to_lists()
    assert rows != greedy, "sampling collapsed to greedy"
    for b, ref in enumerate(step_logits(model, prompts, rows)):
        for t, token in enumerate(rows[b]):
            assert allowed(ref[t], cfg)[token], (b, t, token)
        # log-probs are under the untempered, unfiltered model distribution
        np.testing.assert_allclose(out.logprobs[b],
                                   log_softmax(ref)[np.arange(NEW), rows[b]], atol=1e-5)


def _empirical(logits: np.ndarray, cfg: SamplingConfig, n: int) -> np.ndarray:
    keys = jax.random.split(jax.random.key(11), n)
    draws = jax.jit(lambda k: sample(jnp.broadcast_to(logits, (n, logits.size)), k, cfg))(keys)
    return np.bincount(np.asarray(draws), minlength=logits.size) / n


@pytest.mark.parametrize("cfg", [SamplingConfig(temperature=0.7),
                                 SamplingConfig(temperature=1.3, top_k=5),
                                 SamplingConfig(temperature=1.0, top_p=0.8)],
                         ids=["temperature", "top_k", "top_p"])
def test_sampler_frequencies_match_reference_distribution(cfg):
    logits = np.random.default_rng(1).normal(size=40).astype(np.float32) * 1.5
    keep = allowed(logits.astype(np.float64), cfg)
    z = np.where(keep, logits / cfg.temperature, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    n = 20000
    freq = _empirical(logits, cfg, n)
    assert freq[~keep].sum() == 0
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-3), np.abs(freq - p).max()


def test_temperature_to_zero_is_greedy(model):
    greedy = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=())
    cold = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=(),
                    sampling=SamplingConfig(temperature=1e-4), key=jax.random.key(5))
    np.testing.assert_array_equal(greedy.tokens, cold.tokens)
    np.testing.assert_allclose(greedy.logprobs, cold.logprobs, atol=1e-6)


def test_same_key_same_samples_different_keys_differ(model):
    cfg = SAMPLERS["top_k"]
    run = lambda key: generate(model, PROMPTS, max_new_tokens=NEW, sampling=cfg, key=key,
                               stop_tokens=()).tokens
    a, b = run(jax.random.key(7)), run(jax.random.key(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, run(jax.random.PRNGKey(7)))  # raw uint32 keys too
    assert not np.array_equal(a, run(jax.random.key(8)))


def test_row_samples_independent_of_batch_composition(model):
    cfg = SAMPLERS["top_p"]
    key = jax.random.key(9)
    first = generate(model, PROMPTS[:3], row_ids=[10, 11, 12], max_new_tokens=NEW,
                     sampling=cfg, key=key, stop_tokens=())
    others = [_RNG.integers(0, VOCAB, 7).tolist() for _ in range(3)]
    second = generate(model, [others[0], others[1], PROMPTS[0], others[2]],
                      row_ids=[20, 21, 10, 22], max_new_tokens=NEW, sampling=cfg, key=key,
                      stop_tokens=())
    np.testing.assert_array_equal(first.tokens[0], second.tokens[2])


# -- stop tokens and lengths -----------------------------------------------------------------
def test_stop_tokens_end_rows_and_pad_the_rest(model):
    free = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=()).to_lists()
    stops = (free[0][4], free[3][2])
    out = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=stops, pad_id=255)
    tokens, logprobs = np.asarray(out.tokens), np.asarray(out.logprobs)
    for b, row in enumerate(free):
        hits = [t for t, tok in enumerate(row) if tok in stops]
        n = hits[0] + 1 if hits else NEW
        assert int(out.lengths[b]) == n and bool(out.stopped[b]) == bool(hits)
        assert tokens[b, :n].tolist() == row[:n] and out.to_lists()[b] == row[:n]
        assert (tokens[b, n:] == 255).all() and (logprobs[b, n:] == 0).all()
    assert bool(out.stopped[0]) and bool(out.stopped[3])


def test_max_new_tokens_one(model):
    out = generate(model, PROMPTS, max_new_tokens=1, stop_tokens=())
    free = generate(model, PROMPTS, max_new_tokens=NEW, stop_tokens=())
    np.testing.assert_array_equal(out.tokens[:, 0], free.tokens[:, 0])
    assert out.tokens.shape == (4, 1) and (np.asarray(out.lengths) == 1).all()


def test_default_stop_and_pad_ids_come_from_the_config(model):
    cfg = model.config  # tiny keeps Phi-4's special ids, outside this 256-token vocabulary
    assert special_ids(cfg, None, None) == ((), 0)
    small = cfg.replace(eos_token_id=7, pad_token_id=9)
    assert special_ids(small, None, None) == ((7,), 9)
    assert special_ids(small, (), 3) == ((), 3)
    assert special_ids(small, [4, 5], None) == ((4, 5), 9)


def test_invalid_requests_raise(model):
    with pytest.raises(ValueError, match="at least|lengths"):
        generate(model, [[1, 2], []], max_new_tokens=4)
    with pytest.raises(ValueError, match="key"):
        generate(model, PROMPTS, max_new_tokens=4, sampling=SamplingConfig(temperature=1.0))
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, PROMPTS, max_new_tokens=model.config.max_seq_len)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)


# -- scoring ---------------------------------------------------------------------------------
def test_token_logprobs_match_full_forward(model):
    seqs = PROMPTS + [_RNG.integers(0, VOCAB, 150).tolist()]  # > 128: chunked projection
    got = np.asarray(token_logprobs(model, seqs))
    assert got.shape == (5, 150)
    for b, (seq, full) in enumerate(zip(seqs, full_logits_batch(model, seqs))):
        ref = log_softmax(full)
        np.testing.assert_allclose(got[b, 1:len(seq)], ref[np.arange(len(seq) - 1), seq[1:]],
                                   atol=2e-5)
        assert got[b, 0] == 0 and (got[b, len(seq):] == 0).all()


def test_score_matches_generate_logprobs_and_reference(model):
    cfg = SAMPLERS["top_k_top_p"]
    out = generate(model, PROMPTS, max_new_tokens=NEW, sampling=cfg, key=jax.random.key(1),
                   stop_tokens=())
    conts = [row[:n] for row, n in zip(out.to_lists(), (12, 3, 7, 1))]
    scored = score(model, PROMPTS, conts)
    refs = step_logits(model, PROMPTS, conts)
    for b, cont in enumerate(conts):
        ref = log_softmax(refs[b])[np.arange(len(cont)), cont]
        np.testing.assert_allclose(scored.logprobs[b, :len(cont)], ref, atol=2e-5)
        np.testing.assert_allclose(scored.logprobs[b, :len(cont)], out.logprobs[b, :len(cont)],
                                   atol=2e-5)
        assert (np.asarray(scored.logprobs[b, len(cont):]) == 0).all()
        np.testing.assert_allclose(scored.total[b], ref.sum(), atol=1e-4)
    np.testing.assert_array_equal(scored.lengths, [12, 3, 7, 1])


# -- compilation -----------------------------------------------------------------------------
def test_buckets_reuse_the_compiled_program(model):
    assert [bucket(n, 16) for n in (1, 16, 17, 24, 25, 33, 100)] == [16, 16, 24, 24, 32, 48, 128]
    cache_size = decode._generate_jit._cache_size
    generate(model, PROMPTS[:3], max_new_tokens=NEW, stop_tokens=(3,))
    size = cache_size()
    # other batches in the same buckets: batch 3 -> 4, prompts <= 16, max_new 9..16
    other = [_RNG.integers(0, VOCAB, n).tolist() for n in (16, 1, 4, 11)]
    four = generate(model, other, max_new_tokens=16, stop_tokens=(5, 6, 7), pad_id=1)
    three = generate(model, other[:3], max_new_tokens=9, stop_tokens=())
    assert cache_size() == size
    assert four.tokens.shape == (4, 16) and three.tokens.shape == (3, 9)
    for b in range(3):  # the same rows in another batch: the same greedy tokens
        n = min(int(four.lengths[b]), 9)
        np.testing.assert_array_equal(four.tokens[b, :n], three.tokens[b, :n])
    generate(model, other, max_new_tokens=17, stop_tokens=())  # a new max_new bucket
    assert cache_size() == size + 1
