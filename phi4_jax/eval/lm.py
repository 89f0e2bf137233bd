"""The model under evaluation, in process (`LocalLM`) or behind a server (`RemoteLM`).

Both answer the same three questions, in tokens of the model's own tokenizer:

    lm.encode(text)                               # ids (a BOS first only with add_bos)
    lm.loglikelihood([(context_ids, cont_ids)])   # summed log p(cont | context), float nats
    lm.generate(prompts, n=1, max_tokens=256, temperature=0.0, seed=0, stop=("\\n\\n",))

`LocalLM` scores pairs (after lm-eval's left truncation: (context + continuation)[-(max_length
+ 1):]) as tries (`phi4_jax.inference.trie`): rows of up to `trie_max_len` tokens are sorted
and packed so that every distinct prefix runs through the model once (a question's context
once for all its choices, the choices' common tokens once, the opening words or few-shot
examples that neighbouring questions share once per packed row), and only positions that predict
a scored token are projected onto the vocabulary. A pass holds at most batch_size x the longest
row's tokens (the activation memory of lm-eval's padded batch of batch_size rows), and at least
4 packed rows; every pass of a row-length class pads to that class's largest shape, so each
class compiles one program.
Longer rows: a context with several continuations is run once into a KV cache and its
continuations against it (`inference.scoring.shared_prefix_logprobs`), one of its own as a whole
row (`token_logprobs`). Per-token log-probs are summed in float64. A pair's score depends on
its own tokens and the program that runs it, not on the order of the requests (docs/eval.md:
"Scoring in process").

`RemoteLM` talks to an OpenAI-compatible server: vLLM's POST /tokenize (lm-eval's remote
tokenizer; this project's server has it) and POST /v1/completions with token-id prompts,
echo=true, logprobs=1, max_tokens=1 (what lm-eval's local-completions sends) for scores; text
generation goes through the workflow engine's `LLMClient` (retries, optional SQLite cache).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

Pair = tuple[list[int], list[int]]
Ids = tuple[int, ...]
Progress = Callable[[int], None]
log = logging.getLogger(__name__)
# A trie pass holds at least this many rows (512 tokens at the shortest row length): fewer
# rows leave the matmuls too thin to be fast, and round differently from larger passes.
_MIN_ROWS = 4


class LM(Protocol):
    name: str
    fingerprint: str
    max_length: int
    prefix_id: int | None

    def encode(self, text: str, *, bos: bool | None = None) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def loglikelihood(self, pairs: Sequence[Pair], progress: Progress | None = None
                      ) -> list[float]: ...

    def generate(self, prompts: Sequence[str], *, n: int = 1, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0, stop: Sequence[str] = ()
                 ) -> list[list[str]]: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def truncate(ids: list[int], max_length: int) -> list[int]:
    """lm-eval's left truncation: at most max_length inputs, so max_length + 1 tokens."""
    return ids[-(max_length + 1):]


def split_row(context: Sequence[int], continuation: Sequence[int], max_length: int
              ) -> tuple[Ids, Ids]:
    """The (context, continuation) that is scored: the row context + continuation cut from the
    left to max_length + 1 tokens, split before the continuation; a continuation that fills the
    whole row keeps its first token as the context (it is never predicted)."""
    row = truncate([*context, *continuation], max_length)
    cut = max(len(row) - len(continuation), 1) if continuation else len(row)
    return tuple(row[:cut]), tuple(row[cut:])


def fingerprint_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _files_signature(source: str) -> list[tuple[str, int]]:
    """(name, size) of the model files under `source` (a file or a directory)."""
    if os.path.isfile(source):
        return [(os.path.basename(source), os.path.getsize(source))]
    out = []
    for root, _, files in os.walk(source):
        for f in sorted(files):
            p = os.path.join(root, f)
            out.append((os.path.relpath(p, source), os.path.getsize(p)))
    return sorted(out)


class LocalLM:
    """A model loaded by `phi4_jax.serve.loading.load`, scored and sampled in process."""

    def __init__(self, served: Any, *, batch_size: int = 32, add_bos: bool = False):
        import dataclasses

        self.model, self.codec, self.name = served.model, served.codec, served.name
        self.batch_size, self.add_bos = max(int(batch_size), 1), add_bos
        self.compiles = 0  # XLA compiles during loglikelihood calls, all calls together
        self.shapes: set[Any] = set()  # scoring program shapes used so far
        self.trie_max_len = 512  # longer rows: the KV-cache or whole-row paths
        # Real work so far: token passes through the blocks, positions projected on the vocab.
        self.work = collections.Counter(block_tokens=0, vocab_rows=0)
        self._trie_shapes: dict[int, Any] = {}  # row length -> largest program shape so far
        config = self.model.config
        self.max_length = int(config.max_seq_len)
        self.prefix_id = self.codec.bos_id if self.codec.bos_id is not None else self.codec.eos_id
        self.fingerprint = fingerprint_of({
            "kind": served.kind, "config": dataclasses.asdict(config),
            "files": _files_signature(served.source), "add_bos": add_bos})

    def encode(self, text: str, *, bos: bool | None = None) -> list[int]:
        """The codec's ids; a BOS first when `bos` (default: add_bos) and the model has one."""
        ids = self.codec.encode(text)
        bos = self.add_bos if bos is None else bos
        return [self.codec.bos_id, *ids] if bos and self.codec.bos_id is not None else ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.codec.decode(ids)

    def loglikelihood(self, pairs: Sequence[Pair], progress: Progress | None = None
                      ) -> list[float]:
        import jax

        out = [0.0] * len(pairs)
        by_context: dict[Ids, dict[Ids, list[int]]] = collections.defaultdict(dict)
        for i, (c, k) in enumerate(pairs):
            context, cont = split_row(c, k, self.max_length)
            if cont:
                by_context[context].setdefault(cont, []).append(i)
        empty = len(pairs) - sum(len(ix) for ks in by_context.values() for ix in ks.values())
        if progress is not None and empty:
            progress(empty)  # nothing to score: 0
        short = [(c, k) for c, ks in by_context.items() for k in ks
                 if len(c) + len(k) <= self.trie_max_len]
        long = {c: {k: ix for k, ix in ks.items() if len(c) + len(k) > self.trie_max_len}
                for c, ks in by_context.items()}
        shared = {c: ks for c, ks in long.items() if len(ks) > 1}  # ks: the long ones only
        alone = [(c, k) for c, ks in long.items() if len(ks) == 1 for k in ks]
        compiles = [0]

        def count(event: str, _secs: float, **_: Any) -> None:
            compiles[0] += event == "/jax/core/compile/backend_compile_duration"

        jax.monitoring.register_event_duration_secs_listener(count)
        try:
            batches = self._score_tries(short, by_context, out, progress)
            batches += self._score_shared(shared, out, progress)
            batches += self._score_rows(alone, by_context, out, progress)
        finally:
            jax.monitoring.unregister_event_duration_listener(count)
        self.compiles += compiles[0]
        log.info("%d pairs: %d in tries, %d shared long contexts, %d long rows, %d batches, "
                 "%d compiles (%d program shapes so far)", len(pairs), len(short), len(shared),
                 len(alone), batches, compiles[0], len(self.shapes))
        return out

    def _score_tries(self, items: list[tuple[Ids, Ids]],
                     by_context: dict[Ids, dict[Ids, list[int]]], out: list[float],
                     progress: Progress | None) -> int:
        """Rows of at most trie_max_len tokens, packed as tries (`inference.trie`), in classes
        of row length (up to 128, 256, 512, ... tokens). Returns the number of passes."""
        from phi4_jax.inference import trie

        classes: dict[int, list[tuple[Ids, Ids]]] = collections.defaultdict(list)
        for c, k in items:
            classes[max(trie.ROW_MIN, 1 << (len(c) + len(k) - 1).bit_length())].append((c, k))
        passes = 0
        for _, group in sorted(classes.items()):
            longest = max(len(c) + len(k) for c, k in group)
            row_len = trie.row_length(longest)
            packed = trie.pack([c + k for c, k in group], [len(c) for c, _ in group],
                               rows_per_pass=max(_MIN_ROWS, self.batch_size * longest // row_len),
                               row_len=row_len, shape=self._trie_shapes.get(row_len))
            self._trie_shapes[row_len] = packed.shape
            self.shapes.add(packed.shape)
            in_pass: dict[int, list[int]] = collections.defaultdict(list)
            for g, (k_pass, _, _) in enumerate(packed.reads):
                in_pass[k_pass].append(g)
            for k_pass, p in enumerate(packed.passes):
                lp = trie.run_pass(self.model, p, packed.shape)
                self.work.update(block_tokens=p.nodes, vocab_rows=len(p.parents))
                done = 0
                for g in in_pass[k_pass]:
                    _, parent, child = packed.reads[g]
                    total = float(lp[parent, child].astype(np.float64).sum())
                    owners = by_context[group[g][0]][group[g][1]]
                    for j in owners:
                        out[j] = total
                    done += len(owners)
                if progress is not None:
                    progress(done)
            passes += len(packed.passes)
        return passes

    def _score_rows(self, alone: list[tuple[Ids, Ids]],
                    by_context: dict[Ids, dict[Ids, list[int]]], out: list[float],
                    progress: Progress | None) -> int:
        """Contexts with one continuation: whole rows in one forward pass each
        (`token_logprobs`), deduplicated, longest first, batch_size rows at a time (perplexity
        windows and the like). Returns the number of batches."""
        from phi4_jax.inference.scoring import token_logprobs

        owners = collections.defaultdict(list)  # row -> its (context, continuation) splits
        for c, k in alone:
            owners[c + k].append((c, k))
        unique = sorted(owners, key=lambda r: (-len(r), r))
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start:start + self.batch_size]
            lp = np.asarray(token_logprobs(self.model, [list(r) for r in batch]))
            self.work.update(block_tokens=sum(map(len, batch)), vocab_rows=sum(map(len, batch)))
            done = 0
            for i, r in enumerate(batch):
                for c, k in owners[r]:
                    total = float(lp[i, len(c):len(r)].astype(np.float64).sum())
                    for j in by_context[c][k]:
                        out[j] = total
                    done += len(by_context[c][k])
            if progress is not None:
                progress(done)
        return -(-len(unique) // self.batch_size)

    def _score_shared(self, shared: dict[Ids, dict[Ids, list[int]]], out: list[float],
                      progress: Progress | None) -> int:
        """Contexts with several continuations: each context run once per batch, its
        continuations against its KV cache (`shared_prefix_logprobs`). Batches hold contexts of
        one shape bucket (length and longest continuation) and at most batch_size
        continuations; the context count is cut to a bucket size (no padded contexts but in a
        bucket's last batch), and every batch of a bucket pads to the bucket's largest shape:
        one compiled program per bucket. Returns the number of batches."""
        from phi4_jax.inference.decode import bucket
        from phi4_jax.inference.scoring import PrefixShape, prefix_shape, shared_prefix_logprobs

        items = []  # (shape bucket, context, its continuations), at most batch_size each
        for context, conts in shared.items():
            ks = sorted(conts)
            for start in range(0, len(ks), self.batch_size):
                chunk = ks[start:start + self.batch_size]
                key = prefix_shape(1, len(context), 1, max(map(len, chunk)))
                items.append(((key.context_len, key.continuation_len), context, chunk))
        items.sort(key=lambda x: (x[0], x[1]))
        batches, i = [], 0
        while i < len(items):
            j, rows = i, 0
            while (j < len(items) and items[j][0] == items[i][0]
                   and rows + len(items[j][2]) <= self.batch_size):
                rows += len(items[j][2])
                j += 1
            n = j - i
            while bucket(n) != n:  # 10 contexts -> 8: no padded contexts
                n -= 1
            batches.append(items[i:i + n])
            i += n
        shapes: dict[tuple[int, int], PrefixShape] = {}  # the largest batch's, per bucket
        for batch in batches:
            shape = prefix_shape(len(batch), max(len(c) for _, c, _ in batch),
                                 sum(len(ks) for _, _, ks in batch),
                                 max(len(k) for _, _, ks in batch for k in ks))
            shapes[batch[0][0]] = PrefixShape(*map(max, zip(shapes.get(batch[0][0], shape),
                                                            shape)))
        self.shapes.update(shapes.values())
        for batch in batches:
            contexts = [list(c) for _, c, _ in batch]
            conts = [list(k) for _, _, ks in batch for k in ks]
            owner = [u for u, (_, _, ks) in enumerate(batch) for _ in ks]
            lp = shared_prefix_logprobs(self.model, contexts, conts, owner,
                                        shape=shapes[batch[0][0]])
            self.work.update(block_tokens=sum(map(len, contexts)) + sum(map(len, conts)),
                             vocab_rows=sum(map(len, conts)))
            r = 0
            for _, c, ks in batch:
                for k in ks:
                    total = float(lp[r, :len(k)].astype(np.float64).sum())
                    for j in shared[c][k]:
                        out[j] = total
                    r += 1
                if progress is not None:
                    progress(sum(len(shared[c][k]) for k in ks))
        return len(batches)

    def generate(self, prompts: Sequence[str], *, n: int = 1, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0, stop: Sequence[str] = ()
                 ) -> list[list[str]]:
        import jax

        from phi4_jax.inference import GREEDY, SamplingConfig, generate

        sampling = SamplingConfig(temperature=temperature) if temperature > 0 else GREEDY
        per_batch = max(self.batch_size // n, 1)
        out: list[list[str]] = []
        for start in range(0, len(prompts), per_batch):
            ids = [self.encode(p) or [self.prefix_id or 0]
                   for p in prompts[start:start + per_batch]]
            rows = np.arange(start * n, (start + len(ids)) * n)  # a sample's identity
            result = generate(self.model, ids, max_new_tokens=max_tokens, sampling=sampling,
                              key=jax.random.key(seed), n=n, row_ids=rows,
                              stop_tokens=self.codec.stop_ids)
            texts = [cut_at_stop(self.codec.decode(t), stop) for t in result.to_lists()]
            out.extend(texts[i * n:(i + 1) * n] for i in range(len(ids)))
        return out


class RemoteLM:
    """An OpenAI-compatible server at `base_url` (".../v1") serving `model`."""

    def __init__(self, base_url: str, model: str, *, batch_size: int = 32,
                 add_bos: bool = False, cache_path: str | None = None, timeout_s: float = 600):
        import httpx

        self.base_url, self.name = base_url.rstrip("/"), model
        self.root = self.base_url.removesuffix("/v1")
        self.batch_size, self.add_bos = max(int(batch_size), 1), add_bos
        self.cache_path = cache_path
        self._http = httpx.Client(timeout=timeout_s)
        info = self._get("/tokenizer_info")
        self.max_length = int(info.get("model_max_length") or 2048)
        self.prefix_id = None
        for key in ("bos_token", "eos_token"):
            if info.get(key) and self.prefix_id is None:
                ids = self._post(f"{self.root}/tokenize", {"model": model, "prompt": info[key]})
                self.prefix_id = ids["tokens"][0] if len(ids["tokens"]) == 1 else None
        self.fingerprint = fingerprint_of({"base_url": self.base_url, "model": model,
                                           "tokenizer": info, "add_bos": add_bos})

    def _get(self, path: str) -> dict[str, Any]:
        r = self._http.get(f"{self.root}{path}")
        r.raise_for_status()
        return r.json()

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self._http.post(url, json=body)
        r.raise_for_status()
        return r.json()

    def encode(self, text: str, *, bos: bool | None = None) -> list[int]:
        bos = self.add_bos if bos is None else bos
        return self._post(f"{self.root}/tokenize", {"model": self.name, "prompt": text,
                                                    "add_special_tokens": bos})["tokens"]

    def decode(self, ids: Sequence[int]) -> str:
        return self._post(f"{self.root}/detokenize", {"model": self.name,
                                                      "tokens": list(ids)})["prompt"]

    def loglikelihood(self, pairs: Sequence[Pair], progress: Progress | None = None
                      ) -> list[float]:
        rows = [truncate(list(c) + list(k), self.max_length) for c, k in pairs]
        out = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            reply = self._post(f"{self.base_url}/completions", {
                "model": self.name, "prompt": batch, "echo": True, "logprobs": 1,
                "max_tokens": 1, "temperature": 0.0})
            choices = sorted(reply["choices"], key=lambda c: c["index"])
            for row, (_, k), choice in zip(batch, pairs[start:], choices):
                lps = choice["logprobs"]["token_logprobs"][:len(row)]
                out.append(float(sum(lps[len(row) - len(k):])) if k else 0.0)
            if progress is not None:
                progress(len(batch))
        return out

    def generate(self, prompts: Sequence[str], *, n: int = 1, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0, stop: Sequence[str] = ()
                 ) -> list[list[str]]:
        from phi4_jax.synth import LLMClient, ModelConfig, ResponseCache

        cache = ResponseCache(self.cache_path) if self.cache_path else None
        client = LLMClient(ModelConfig(model=self.name, base_url=self.base_url, revision=None,
                                       concurrency=self.batch_size), cache=cache, seed=seed)

        async def one(i: int, prompt: str) -> list[str]:
            samples = await client.complete(prompt, n=n, record_id=str(i), max_tokens=max_tokens,
                                            temperature=temperature, seed=seed,
                                            **({"stop": list(stop)[:4]} if stop else {}))
            return [cut_at_stop(s.text, stop) for s in samples]

        async def main() -> list[list[str]]:
            try:
                return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
            finally:
                await client.aclose()

        try:
            return asyncio.run(main())
        finally:
            if cache is not None:
                cache.close()
