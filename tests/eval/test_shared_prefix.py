"""Multiple-choice scoring with shared contexts, on a tiny random model (float32).

    python -m pytest -q tests/eval/test_shared_prefix.py

- `shared_prefix_logprobs` (each context run once into a KV cache, its continuations against
  it; LocalLM's path for rows longer than its tries) gives the per-token log-probs of whole rows
  (`token_logprobs`) to 1e-5 nats per token;
- `LocalLM.loglikelihood` gives every pair the summed log-probs of its own whole row (shared
  contexts, single-continuation rows, duplicates, empty continuations, left truncation, more
  choices than the batch size) to 1e-5 nats, through tries and through the long-row paths;
- one XLA compile per shape bucket, none when a second task has the same shapes;
- a question's scores do not depend on its neighbours: shuffled examples give bit-identical
  scores at one batch size, and batch sizes 1, 3 and 32 agree to 1e-5.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from phi4_jax.eval.lm import LocalLM
from phi4_jax.eval.runners import run_mc
from phi4_jax.eval.tasks import load_task
from phi4_jax.inference.scoring import shared_prefix_logprobs, token_logprobs
from tests.eval.test_harness import QUESTIONS

TOLERANCE = 1e-5  # nats; float32, different program shapes sum in different orders



def whole_row(model, context, continuation) -> np.ndarray:
    """Per-token log-probs of the continuation from one forward pass over the whole row."""
    lp = np.asarray(token_logprobs(model, [list(context) + list(continuation)]))[0]
    return lp[len(context):]


def test_shared_prefill_equals_whole_rows(served):
    rng = np.random.default_rng(0)
    contexts = [rng.integers(2, 258, n).tolist() for n in (1, 5, 17, 30)]
    continuations, owner = [], []
    for u, m in enumerate((3, 1, 4, 2)):
        for _ in range(m):
            continuations.append(rng.integers(2, 258, int(rng.integers(1, 9))).tolist())
            owner.append(u)
    lp = shared_prefix_logprobs(served.model, contexts, continuations, owner)
    assert lp.shape == (len(continuations), max(map(len, continuations)))
    worst = 0.0
    for r, (k, u) in enumerate(zip(continuations, owner)):
        want = whole_row(served.model, contexts[u], k)
        np.testing.assert_allclose(lp[r, :len(k)], want, atol=TOLERANCE, rtol=0)
        assert not lp[r, len(k):].any()  # 0 past the row's length
        worst = max(worst, float(np.abs(lp[r, :len(k)] - want).max()))
    print(f"max |shared - whole row| = {worst:.2e} nats per token")


@pytest.mark.parametrize("trie_max_len", [512, 0], ids=["tries", "kv_cache_and_rows"])
def test_loglikelihood_equals_whole_rows_on_every_path(served, trie_max_len):
    lm = LocalLM(served, batch_size=4)
    lm.max_length = 24
    lm.trie_max_len = trie_max_len  # rows longer than this: the KV-cache and whole-row paths
    rng = np.random.default_rng(1)
    ids = lambda n: rng.integers(2, 258, n).tolist()
    question = ids(10)
    many = ids(6)  # seven choices: more than a batch
    pairs = [(question, ids(2)), (question, ids(3)), (question, ids(1)),
             (question, [])]  # empty: 0
    pairs += [(many, ids(int(rng.integers(1, 5)))) for _ in range(7)]
    pairs += [(ids(12), ids(5))]  # a context of its own: the whole-row path
    pairs += [(ids(30), ids(4)), (ids(22), ids(3))]  # cut from the left to 25 tokens
    pairs += [pairs[0], pairs[-1]]  # duplicates
    long_ctx = ids(40)
    pairs += [(long_ctx, ids(3)), (long_ctx, ids(3))]  # cut alike: still one shared context
    got = lm.loglikelihood(pairs)
    for (c, k), value in zip(pairs, got):
        row = (list(c) + list(k))[-(lm.max_length + 1):]
        want = float(whole_row(served.model, row[:len(row) - len(k)], row[len(row) - len(k):])
                     .astype(np.float64).sum()) if k else 0.0
        assert value == pytest.approx(want, abs=TOLERANCE)
    assert got[-4] == got[0] and got[-3] == got[13]


def write_mc(path, questions):
    path.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in questions))
    return str(path)


def test_one_compile_per_shape_bucket(served, tmp_path):
    import jax

    jax.clear_caches()  # other tests may have compiled these shapes
    docs = load_task(f"mc:{write_mc(tmp_path / 'a.jsonl', QUESTIONS)}").docs
    lm = LocalLM(served, batch_size=32)
    run_mc(lm, docs, num_fewshot=0, seed=0)
    print(f"{len(docs)} questions: {lm.compiles} compiles, shapes {sorted(lm.shapes)}")
    assert lm.compiles == len(lm.shapes) <= 3
    # other questions whose contexts and choices fall in the same buckets: nothing compiles
    other = [(q.replace("plus", "and"), [c[1], c[0], c[2]], a) for q, c, a in QUESTIONS]
    run_mc(lm, load_task(f"mc:{write_mc(tmp_path / 'b.jsonl', other)}").docs, num_fewshot=0,
           seed=0)
    assert lm.compiles == len(lm.shapes)


def test_scores_do_not_depend_on_neighbours_or_batch_size(served, tmp_path):
    docs = load_task(f"mc:{write_mc(tmp_path / 'q.jsonl', QUESTIONS)}").docs
    score = lambda lm, ds: {s["id"]: s["loglik"] for s in run_mc(lm, ds, num_fewshot=2, seed=0,
                                                                  all_docs=docs)}
    base = score(LocalLM(served, batch_size=32), docs)
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    assert score(LocalLM(served, batch_size=32), shuffled) == base  # bit for bit
    ids = sorted(base)
    for batch_size in (1, 3):
        other = score(LocalLM(served, batch_size=batch_size), docs)
        diff = np.abs(np.array([other[i] for i in ids]) - np.array([base[i] for i in ids]))
        print(f"max |batch {batch_size} - batch 32| = {diff.max():.2e} nats")
        assert diff.max() <= TOLERANCE
