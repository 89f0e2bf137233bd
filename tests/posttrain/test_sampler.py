"""`ModelSampler`, the adapter over decode.generate, on a tiny random model."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from phi4_jax.inference.decode import score
from phi4_jax.inference.sampling import SamplingConfig
from phi4_jax.model import init_model, preset
from phi4_jax.posttrain.sampler import ModelSampler, Sampler, row_id


class CharTokenizer:
    """ids 3.. are characters (mod 61); 1 = eos, 2 = a chat marker."""

    eos_id = 1

    def encode(self, text):
        return [3 + ord(c) % 61 for c in text]

    def decode(self, ids, skip_special=False):
        return "".join("|" if i < 3 else chr(ord("a") + (i - 3) % 26) for i in ids
                       if not (skip_special and i < 3))

    def render_chat(self, messages, add_generation_prompt=True):
        return "".join(m["content"] + "\n" for m in messages)


@pytest.fixture(scope="module")
def sampler():
    cfg = preset("tiny", vocab_size=64, dtype="float32", num_layers=1, max_seq_len=128)
    model = init_model(cfg, seed=0)
    return ModelSampler(model, CharTokenizer(), max_new_tokens=8, stop_tokens=(1, 5),
                        sampling=SamplingConfig(temperature=1.5), seed=3, tokenizer_name="chars")


def test_rollouts_shapes_stops_and_protocol(sampler):
    assert isinstance(sampler, Sampler)
    prefixes = [[7, 8, 9], [10, 11]]
    out = sampler.sample(prefixes, 2)  # every call here samples 4 rows: one compiled shape
    assert [len(rows) for rows in out] == [2, 2]
    for rows in out:
        for r in rows:
            assert len(r.tokens) == len(r.logprobs) and 1 <= len(r.tokens) <= 8
            assert r.stopped == (r.tokens[-1] in (1, 5))
            assert all(t not in (1, 5) for t in r.tokens[:-1])
            assert all(lp <= 0 for lp in r.logprobs)
    assert sampler.render([{"role": "user", "content": "ab"}]) == CharTokenizer().encode("ab\n")


def test_logprobs_match_independent_scoring(sampler):
    prefix = [7, 8, 9, 12]
    rows = sampler.sample([prefix], 4)[0]
    scored = score(sampler.model, [prefix] * 4, [list(r.tokens) for r in rows])
    for r, lp in zip(rows, np.asarray(scored.logprobs)):
        np.testing.assert_allclose(r.logprobs, lp[:len(r.tokens)], atol=2e-4)


def test_rollouts_depend_only_on_prefix_and_index(sampler):
    a, b = [7, 8, 9], [20, 21, 22, 23, 24]
    alone = [r.tokens for r in sampler.sample([a], 4)[0]]
    assert [r.tokens for r in sampler.sample([b, a], 2)[1]] == alone[:2]
    chunked = ModelSampler(sampler.model, sampler.tokenizer, max_new_tokens=8, stop_tokens=(1, 5),
                           sampling=sampler.sampling, seed=3, batch_rows=4)
    assert [r.tokens for r in chunked.sample([b, a], 4)[1]] == alone  # two calls of 4 rows
    other_seed = ModelSampler(sampler.model, sampler.tokenizer, max_new_tokens=8,
                              stop_tokens=(1, 5), sampling=sampler.sampling, seed=4)
    assert [r.tokens for r in other_seed.sample([a], 4)[0]] != alone
    assert len({row_id(a, j) for j in range(100)}) == 100 and row_id(a, 0) != row_id(b, 0)


def test_shared_prefill_gives_the_unshared_samples(sampler, monkeypatch):
    """n rollouts of a prefix run one prefill (generate's n=) and are token for token the rows
    the unshared path draws: the prefix repeated n times under the same row ids."""
    from phi4_jax.inference import decode

    prefixes = [[7, 8, 9], [20, 21, 22, 23, 24]]
    calls = []
    real = decode.generate

    def spy(model, prompts, **kw):
        calls.append((len(prompts), kw.get("n", 1)))
        return real(model, prompts, **kw)

    monkeypatch.setattr(decode, "generate", spy)
    shared = sampler.sample(prefixes, 4)
    assert calls == [(2, 4)]  # one call: two prompts prefilled once each, 4 rows from each
    repeated = [p for p in prefixes for _ in range(4)]
    gen = real(sampler.model, repeated, max_new_tokens=8, sampling=sampler.sampling,
               key=jax.random.key(3), stop_tokens=(1, 5),
               row_ids=[row_id(p, j) for p in prefixes for j in range(4)])
    tokens, lengths = np.asarray(gen.tokens), np.asarray(gen.lengths)
    unshared = [tuple(int(t) for t in tokens[r, :lengths[r]]) for r in range(8)]
    assert [r.tokens for rows in shared for r in rows] == unshared
