"""The model under evaluation, in process (`LocalLM`) or behind a server (`RemoteLM`).

Both answer the same three questions, in tokens of the model's own tokenizer:

    lm.encode(text)                               # ids (a BOS first only with add_bos)
    lm.loglikelihood([(context_ids, cont_ids)])   # summed log p(cont | context), float nats
    lm.generate(prompts, n=1, max_tokens=256, temperature=0.0, seed=0, stop=("\\n\\n",))

`LocalLM` scores with `phi4_jax.inference.scoring.token_logprobs`: one forward pass per batch of
rows (context + continuation), rows deduplicated, sorted longest first and cut into batches of
`batch_size`, so padding stays small and each batch pads to one of few shapes (batch to a
power of two, length by `decode.bucket`): one compiled program per shape bucket. A row's score
depends only on its own tokens (right padding, causal attention), not on the batch it rode in.
Rows longer than the model's context are cut from the left as lm-eval does:
(context + continuation)[-(max_length + 1):].

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
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

Pair = tuple[list[int], list[int]]
Progress = Callable[[int], None]


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
        from phi4_jax.inference.scoring import token_logprobs

        rows = [tuple(truncate(list(c) + list(k), self.max_length)) for c, k in pairs]
        counts = collections.Counter(rows)
        unique = sorted(counts, key=lambda r: (-len(r), r))
        scored: dict[tuple[int, ...], np.ndarray] = {}
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start:start + self.batch_size]
            lp = np.asarray(token_logprobs(self.model, [list(r) for r in batch]))
            for i, r in enumerate(batch):
                scored[r] = lp[i, :len(r)].astype(np.float64)
            if progress is not None:
                progress(sum(counts[r] for r in batch))
        return [float(scored[r][len(r) - len(k):].sum()) if k else 0.0
                for r, (_, k) in zip(rows, pairs)]

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
