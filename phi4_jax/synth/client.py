"""The LLM client of the workflow engine: `openai.AsyncOpenAI` against any compatible server,
with bounded concurrency, a requests-per-minute limit, timeouts, our own retries and the cache.

    client = LLMClient(ModelConfig(model="phi-4", base_url="http://localhost:8000/v1"),
                       cache=ResponseCache("out/cache.sqlite"))
    samples = await client.chat([{"role": "user", "content": "Hi"}], n=4, temperature=1.0,
                                record_id="q17")
    samples = await client.complete("The capital of France is", max_tokens=8)

Retries are ours (the openai client runs with max_retries=0, so every attempt is counted):
429 (waiting what Retry-After / retry-after-ms asks, capped at `max_backoff_s`), 5xx, timeouts,
dropped connections and replies that are not a complete completion (truncated JSON, no choices)
are retried with exponential backoff and full jitter, up to `max_retries` times, then raise
`RequestError(transient=True)`. Any other 4xx is not retried: `RequestError(transient=False)`
with its status. Either names the record id it was asked for.

Samples: sample i of a request has its own cache key (`cache.request_key`); the missing samples
are asked for in one request with n = how many are missing (again, one at a time, for servers
that return fewer choices than n). Only complete, successful replies are cached.

The API key is read from the environment variable `api_key_env` names when the client is made,
and is never logged, printed or written (a `ModelConfig` holds only the variable's name).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from phi4_jax.synth.cache import ResponseCache, request_key


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One model on one server, and how hard to push it (limits are per process)."""

    model: str  # the model id the server knows
    base_url: str | None = None  # e.g. http://localhost:8000/v1 (None: the openai default)
    api_key_env: str | None = None  # name of the env variable with the key (None: no key)
    revision: str | None = "auto"  # "auto": ask GET /models once per run; a string; or None
    concurrency: int = 16  # requests in flight
    rpm: float = 0.0  # requests per minute (0: unlimited)
    timeout_s: float = 120.0  # per attempt
    max_retries: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0


@dataclasses.dataclass(frozen=True)
class Sample:
    """One choice of a completion: its text and why it ended ('stop', 'length', ...)."""

    text: str
    finish_reason: str | None
    cached: bool = False


class RequestError(RuntimeError):
    """A request that did not succeed: `transient` (retries exhausted) or refused (a 4xx)."""

    def __init__(self, record_id: str | None, message: str, *, transient: bool,
                 status: int | None = None):
        super().__init__(f"record {record_id}: {message}")
        self.record_id, self.transient, self.status = record_id, transient, status


@dataclasses.dataclass
class ClientStats:
    requests: int = 0  # HTTP attempts sent
    retries: int = 0
    cache_hits: int = 0  # samples answered from the cache
    samples: int = 0  # samples asked from the server and received
    failures: int = 0  # RequestErrors raised

    def add(self, other: ClientStats) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class RateLimiter:
    """At most `rpm` starts per minute, spaced evenly (0: no limit)."""

    def __init__(self, rpm: float):
        self.interval = 60.0 / rpm if rpm and rpm > 0 else 0.0
        self.next_start = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


def api_key(env: str | None) -> str:
    """The key in environment variable `env` (ValueError if it is named but unset)."""
    if not env:
        return "unused"
    value = os.environ.get(env)
    if not value:
        raise ValueError(f"environment variable {env} (api_key_env) is not set")
    return value


def retry_after_s(headers: Any) -> float | None:
    """Seconds a 429 asks us to wait: retry-after-ms, retry-after (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            when = email.utils.parsedate_to_datetime(raw) if name == "retry-after" else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    return None


def sampling_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as sent and as keyed: None values dropped, `n` never included."""
    return {k: v for k, v in params.items() if v is not None and k != "n"}


class LLMClient:
    """Chat and text completions of one model, cached, limited and retried (module doc)."""

    def __init__(self, config: ModelConfig, *, cache: ResponseCache | None = None,
                 revision: str | None = None, seed: int | None = None):
        self.config, self.cache, self.revision = config, cache, revision
        self.stats = ClientStats()
        self._key = api_key(config.api_key_env)
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self._limiter = RateLimiter(config.rpm)
        self._random = random.Random(seed)

    def __repr__(self) -> str:  # never the key
        return f"LLMClient(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(base_url=self.config.base_url, api_key=self._key,
                                              max_retries=0, timeout=self.config.timeout_s)
            self._semaphore = asyncio.Semaphore(self.config.concurrency)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def chat(self, messages: Sequence[Mapping[str, Any]], *, n: int = 1,
                   record_id: str | None = None, attempt: int = 0, **params: Any
                   ) -> list[Sample]:
        request = {"messages": [dict(m) for m in messages]}
        return await self._samples("chat", request, n, params, record_id, attempt)

    async def complete(self, prompt: str, *, n: int = 1, record_id: str | None = None,
                       attempt: int = 0, **params: Any) -> list[Sample]:
        return await self._samples("completions", {"prompt": prompt}, n, params, record_id,
                                   attempt)

    async def _samples(self, endpoint: str, request: dict[str, Any], n: int,
                       params: Mapping[str, Any], record_id: str | None, attempt: int
                       ) -> list[Sample]:
        params = sampling_params(params)
        keyed = dict(params, **({"_attempt": attempt} if attempt else {}))
        keys = [request_key(model=self.config.model, revision=self.revision, endpoint=endpoint,
                            request=request, params=keyed, sample=i) for i in range(n)]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        self.stats.cache_hits += len(found)
        out: list[Sample | None] = [Sample(found[k]["text"], found[k]["finish_reason"], True)
                                    if k in found else None for k in keys]
        missing = [i for i, s in enumerate(out) if s is None]
        while missing:
            choices = await self._send(endpoint, request, len(missing), params, record_id)
            fresh = dict(zip(missing, choices))
            if self.cache is not None:
                await self.cache.aput_many({keys[i]: {"text": s.text,
                                                      "finish_reason": s.finish_reason}
                                            for i, s in fresh.items()})
            for i, s in fresh.items():
                out[i] = s
            self.stats.samples += len(fresh)
            missing = missing[len(fresh):]
        return list(out)  # type: ignore[arg-type]

    async def _send(self, endpoint: str, request: dict[str, Any], n: int,
                    params: Mapping[str, Any], record_id: str | None) -> list[Sample]:
        import openai

        client = self._openai()
        body = dict(params, model=self.config.model, **request, **({"n": n} if n != 1 else {}))
        create = (client.chat.completions.create if endpoint == "chat"
                  else client.completions.create)
        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            wait = None
            await self._limiter.wait()
            assert self._semaphore is not None
            async with self._semaphore:
                self.stats.requests += 1
                try:
                    reply = await create(**body)
                    choices = _choices(reply, endpoint)
                    if choices:
                        return choices[:n]
                    last = "a reply without choices"
                except openai.APIStatusError as e:
                    status = e.status_code
                    if status != 429 and status < 500:
                        self.stats.failures += 1
                        raise RequestError(record_id, f"HTTP {status}: {_short(e)}",
                                           transient=False, status=status) from None
                    last = f"HTTP {status}: {_short(e)}"
                    if status == 429:
                        wait = retry_after_s(getattr(e.response, "headers", None))
                except openai.APITimeoutError:
                    last = f"timed out after {self.config.timeout_s}s"
                except openai.APIConnectionError as e:
                    last = f"connection failed: {_short(e.__cause__ or e)}"
                except (ValueError, TypeError, AttributeError) as e:  # truncated / malformed
                    last = f"malformed reply: {type(e).__name__}: {_short(e)}"
            if attempt == self.config.max_retries:
                break
            backoff = min(self.config.max_backoff_s, self.config.initial_backoff_s * 2 ** attempt)
            delay = (min(wait, self.config.max_backoff_s) if wait is not None
                     else self._random.uniform(0, backoff))
            await asyncio.sleep(delay)
        self.stats.failures += 1
        raise RequestError(record_id, f"{self.config.max_retries + 1} attempts failed; last: "
                           f"{last}", transient=True)


def _choices(reply: Any, endpoint: str) -> list[Sample]:
    """The complete choices of a reply, ordered by index; [] if it has none."""
    if isinstance(reply, str):  # a non-JSON body the openai client returned as text
        raise ValueError(f"not a JSON reply: {reply[:80]!r}")
    out = []
    for c in sorted(reply.choices or [], key=lambda c: c.index or 0):
        text = c.message.content if endpoint == "chat" else c.text
        if not isinstance(text, str):
            raise ValueError("a choice without text")
        out.append(Sample(text, c.finish_reason))
    return out


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200]


async def server_revision(config: ModelConfig) -> str | None:
    """The revision the server reports for the model in GET /models (a 'revision' field or
    'version'); None when it reports none. Connection failures raise RequestError."""
    import openai

    client = openai.AsyncOpenAI(base_url=config.base_url, api_key=api_key(config.api_key_env),
                                max_retries=2, timeout=config.timeout_s)
    try:
        page = await client.models.list()
        for entry in page.data:
            if entry.id == config.model:
                extra = entry.model_dump()
                value = extra.get("revision") or extra.get("version")
                return None if value is None else (value if isinstance(value, str)
                                                   else json.dumps(value, sort_keys=True))
        return None
    except openai.NotFoundError:  # a server without /models
        return None
    except openai.APIError as e:
        raise RequestError(None, f"cannot read the model list of {config.base_url}: "
                           f"{_short(e)}", transient=True) from None
    finally:
        await client.close()
