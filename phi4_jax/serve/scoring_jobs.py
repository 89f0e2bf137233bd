"""Echo + logprobs requests: the prompt's own log-probs in one forward pass per chunk.

This is how lm-eval-harness computes log-likelihoods through an OpenAI-compatible server
(`local-completions`: echo, logprobs=1, max_tokens=1, then it sums token_logprobs[ctxlen:-1]).
Prompts of all such queued requests are scored together (sorted by length, `max_batch` rows a
chunk) with `inference.scoring.prompt_logprobs`; a request with max_tokens 1 takes its one
generated token from the same pass (drawn like the decode loop's first token: the same sampler,
the key fold_in(fold_in(key(seed), sample), 0)), so it needs no decode wave.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from phi4_jax.inference.engine import seed_key_data
from phi4_jax.inference.sampling import RowSampling, SamplingConfig, draw, step_keys
from phi4_jax.inference.scoring import prompt_logprobs
from phi4_jax.serve.jobs import Job, PromptScore, TextState
from phi4_jax.serve.protocol import MAX_LOGPROBS


def _top(ids: np.ndarray, lps: np.ndarray, n: int, token: int, lp: float
         ) -> list[tuple[int, float]]:
    """The n best alternatives, plus the chosen token when it is not among them (OpenAI)."""
    out = list(zip(ids[:n].tolist(), lps[:n].tolist()))
    if token not in ids[:n]:
        out.append((token, lp))
    return out


def score(model: Any, codec: Any, jobs: Sequence[Job], max_batch: int) -> None:
    """Fills prompt_scores (and the one token of max_tokens-1 jobs) of `jobs`; marks them
    scored. Cancelled jobs are skipped."""
    items = [(job, i) for job in jobs if not job.cancelled for i in range(len(job.prompts))]
    items.sort(key=lambda item: len(item[0].prompts[item[1]]))
    for start in range(0, len(items), max_batch):
        chunk = items[start:start + max_batch]
        out = prompt_logprobs(model, [job.prompts[i] for job, i in chunk], top_n=MAX_LOGPROBS)
        for k, (job, i) in enumerate(chunk):
            n_tok = len(job.prompts[i])
            lp, ids, lps = out.logprobs[k], out.top_ids[k], out.top_logprobs[k]
            top_n = job.top_n or 0
            prompt = job.prompts[i]
            job.prompt_scores[i] = PromptScore(
                [None] + [float(x) for x in lp[1:n_tok]],
                [None] + [_top(ids[t], lps[t], top_n, prompt[t], float(lp[t]))
                          for t in range(1, n_tok)])
        first = [(job, i, k) for k, (job, i) in enumerate(chunk) if job.max_tokens == 1]
        if first:
            _first_tokens(codec, first, out.next_logits)
    for job in jobs:
        job.scored = True


def _first_tokens(codec: Any, items: list[tuple[Job, int, int]], next_logits: np.ndarray
                  ) -> None:
    """Draws the one token of each choice of max_tokens-1 jobs from its prompt's logits."""
    rows = [(job, job.choices[i * job.n + j], k) for job, i, k in items for j in range(job.n)]
    b = 1 << (len(rows) - 1).bit_length()
    logits = np.zeros((b, next_logits.shape[-1]), np.float32)
    keys = np.zeros((b, 2), np.uint32)
    samples = np.zeros(b, np.uint32)
    configs: list[SamplingConfig] = []
    for r, (job, choice, k) in enumerate(rows):
        logits[r], keys[r], samples[r] = next_logits[k], seed_key_data(job.seed), choice.index
        configs.append(job.sampling)
    token, lp, ids, lps = (np.asarray(x) for x in _draw(logits, keys, samples,
                                                         RowSampling.of(configs, b)))
    stop_ids = set(codec.stop_ids)
    for r, (job, choice, _) in enumerate(rows):
        t = int(token[r])
        choice.generated = 1
        if t in stop_ids:
            choice.finish_reason = "stop"
            continue
        top = None if job.top_n is None else [_top(ids[r], lps[r], job.top_n, t, float(lp[r]))]
        hit = TextState(codec, job.stops).add(choice, [t], [float(lp[r])], top)
        choice.finish_reason = "stop" if hit else "length"


@functools.partial(jax.jit)
def _draw(logits, key_data, samples, sampling):
    keys = jax.vmap(lambda k, j: jax.random.fold_in(jax.random.wrap_key_data(k), j))(
        key_data, samples)
    token, logprob, lse = draw(logits, step_keys(keys, 0), sampling)
    values, ids = jax.lax.top_k(logits, MAX_LOGPROBS)
    return token, logprob, ids, values - lse[:, None]
