"""The ASGI app (FastAPI): OpenAI routes over one `Scheduler`.

    GET  /v1/models              the one served model
    POST /v1/completions         prompt as text / ids (or lists of them); echo, logprobs, stream
    POST /v1/chat/completions    the model's chat template; stream as server-sent events
    GET  /health                 {"status": "ok", queue and batch figures}
    GET  /tokenizer_info, POST /tokenize, POST /detokenize   vLLM's (lm-eval's remote tokenizer)

Requests are validated and tokenized on the event loop, then handed to the scheduler thread
(`scheduler.py`), which answers through a thread-safe callback into the request's own
`asyncio.Queue`. A client that disconnects cancels its job (non-streaming requests poll for the
disconnect every `POLL_S`; a streaming response is cancelled by Starlette).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from phi4_jax.inference.sampling import SamplingConfig
from phi4_jax.serve import protocol as p
from phi4_jax.serve.jobs import Job
from phi4_jax.serve.loading import Served
from phi4_jax.serve.responses import Builder
from phi4_jax.serve.scheduler import Scheduler
from phi4_jax.serve.validate import chat_prompt, completion_prompts, token_budget

POLL_S = 0.25


@dataclasses.dataclass(frozen=True)
class Settings:
    """Server limits: rows per wave (also the largest n), waiting requests before 429,
    decode steps between host checks, and the default max_tokens of chat requests."""

    max_batch: int = 32
    max_queue: int = 64
    segment: int = 8
    default_max_tokens: int = 512


def create_app(served: Served, settings: Settings = Settings()) -> FastAPI:
    """The app; its lifespan starts the scheduler thread and, on shutdown, drains it."""
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["scheduler"] = Scheduler(served.model, served.codec, max_batch=settings.max_batch,
                                       max_queue=settings.max_queue, segment=settings.segment)
        try:
            yield
        finally:
            await asyncio.to_thread(state["scheduler"].close)

    app = FastAPI(title="phi4_jax", lifespan=lifespan)
    app.state.served, app.state.settings, app.state.shared = served, settings, state
    codec, config = served.codec, served.model.config

    @app.exception_handler(p.APIError)
    async def api_error(_: Request, err: p.APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if err.status_code < 500 else "server_error"
        return JSONResponse(p.APIError(err.status_code, str(err.detail), kind=kind).body(),
                            status_code=err.status_code)

    async def body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise p.bad("We could not parse the JSON body of your request (it must be a JSON "
                        "object).", None) from None

    def check_model(name: str | None) -> None:
        if name is not None and name != served.name:
            raise p.APIError(404, f"The model `{name}` does not exist (this server serves "
                             f"`{served.name}`)", param="model", code="model_not_found")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": served.name, **state["scheduler"].stats()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": served.name, "object": "model", "created": 0, "owned_by": "phi4_jax",
            "max_model_len": config.max_seq_len}]}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        return {"eos_token": codec.special_token(codec.eos_id),
                "bos_token": codec.special_token(codec.bos_id), "pad_token": None,
                "chat_template": codec.chat_template, "model_max_length": config.max_seq_len,
                "vocab_size": codec.vocab_size}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        req = p.parse(p.TokenizeRequest, await body(request))
        check_model(req.model)
        ids = codec.encode(req.prompt)
        if req.add_special_tokens and codec.bos_id is not None:
            ids = [codec.bos_id, *ids]
        return {"tokens": ids, "count": len(ids), "max_model_len": config.max_seq_len}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        req = p.parse(p.DetokenizeRequest, await body(request))
        check_model(req.model)
        if any(not 0 <= t < codec.vocab_size for t in req.tokens):
            raise p.bad(f"tokens: ids must be in [0, {codec.vocab_size})", "tokens")
        return {"prompt": codec.decode(req.tokens)}

    def make_job(req: Any, prompts: list[list[int]], max_tokens: int, top_n: int | None,
                 score_prompt: bool, sink: Any) -> Job:
        req.check_unsupported()
        if req.n > settings.max_batch:
            raise p.bad(f"n: at most {settings.max_batch} samples per prompt on this server "
                        f"(--max_batch), got {req.n}", "n")
        sampling = SamplingConfig(temperature=float(req.temperature), top_p=float(req.top_p))
        seed = req.seed if req.seed is not None else secrets.randbits(32)
        return Job(prompts=prompts, n=req.n, max_tokens=max_tokens, sampling=sampling,
                   seed=seed, stops=req.stops(), top_n=top_n, score_prompt=score_prompt,
                   stream=req.stream, sink=sink)

    def channel() -> tuple[asyncio.Queue, Any]:
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def sink(event: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(queue.put_nowait, event)

        return queue, sink

    async def finished(request: Request, job: Job, queue: asyncio.Queue) -> None:
        """Waits for ("done", job); cancels the job if the client disconnects first."""
        scheduler = state["scheduler"]
        try:
            while True:
                try:
                    kind, payload = await asyncio.wait_for(queue.get(), POLL_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        scheduler.cancel(job)
                        raise p.APIError(499, "client disconnected") from None
                    continue
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
        except asyncio.CancelledError:
            scheduler.cancel(job)
            raise

    def stream(job: Job, queue: asyncio.Queue, builder: Builder, chunks: Any,
               usage: bool) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            try:
                for first in chunks(None):
                    yield f"data: {json.dumps(first)}\n\n"
                while True:
                    kind, payload = await queue.get()
                    if kind == "error":
                        yield f"data: {json.dumps(payload.body())}\n\n"
                        break
                    if kind == "delta":
                        for piece in chunks(payload):
                            yield f"data: {json.dumps(piece)}\n\n"
                    if kind == "done":
                        if usage:
                            yield f"data: {json.dumps(builder.usage_chunk(job))}\n\n"
                        break
                yield "data: [DONE]\n\n"
            finally:
                if not job.answered:
                    state["scheduler"].cancel(job)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = p.parse(p.CompletionRequest, await body(request))
        check_model(req.model)
        prompts, texts = completion_prompts(req.prompt, codec, config)
        max_tokens = req.max_tokens if req.max_tokens is not None else 16
        token_budget(prompts, max_tokens, config.max_seq_len)
        queue, sink = channel()
        job = make_job(req, prompts, max_tokens, req.logprobs, req.echo and
                       req.logprobs is not None, sink)
        builder = Builder(codec, served.name, "completion")
        state["scheduler"].submit(job)
        if not req.stream:
            await finished(request, job, queue)
            return builder.completion(job, texts, req.echo)
        echoed: set[int] = set()

        def chunks(deltas: Any) -> list[dict[str, Any]]:
            out = []
            for c, text, first in deltas or []:
                echo = texts[c.prompt_index] if req.echo and c.index not in echoed else ""
                echoed.add(c.index)
                out.append(builder.completion_chunk(job, c, text, first, echo))
            return out

        include = bool(req.stream_options and req.stream_options.include_usage)
        return stream(job, queue, builder, chunks, include)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = p.parse(p.ChatRequest, await body(request))
        check_model(req.model)
        req.check_unsupported()  # before rendering: continue_final_message shapes the prompt
        prompt = chat_prompt(req.messages, codec, continue_final=req.continue_final_message)
        room = config.max_seq_len - len(prompt)
        asked = req.max_completion_tokens or req.max_tokens
        max_tokens = asked if asked is not None else max(1, min(room, settings.default_max_tokens))
        token_budget([prompt], max_tokens, config.max_seq_len)
        if (req.top_logprobs or 0) > p.MAX_LOGPROBS:
            raise p.bad(f"top_logprobs: at most {p.MAX_LOGPROBS} on this server",
                        "top_logprobs")
        queue, sink = channel()
        job = make_job(req, [prompt], max_tokens, (req.top_logprobs or 0) if req.logprobs
                       else None, False, sink)
        builder = Builder(codec, served.name, "chat")
        state["scheduler"].submit(job)
        if not req.stream:
            await finished(request, job, queue)
            return builder.chat(job)

        def chunks(deltas: Any) -> list[dict[str, Any]]:
            if deltas is None:  # the opening chunk of every choice carries the role
                return [builder.chat_chunk(job, c, "", 0, role=True) for c in job.choices]
            return [builder.chat_chunk(job, c, text, first) for c, text, first in deltas]

        include = bool(req.stream_options and req.stream_options.include_usage)
        return stream(job, queue, builder, chunks, include)

    return app
