"""Stages: async functions of one record, with a fingerprint of everything that shapes them.

    async def judge(record, ctx):                       # any module-level async function
        replies = await ctx.chat(ctx.render("judge", record), n=1, temperature=0.0,
                                 max_tokens=256)
        verdict = parse(replies[0].text)                # raise Reject("unparseable_reply", ...)
        return {**record, "verdict": verdict}           # a dict, a list of dicts, or None

    Stage("judge", judge, model="judge", templates={"judge": text}, params={...})
    llm_stage("answer", kind="chat", template=text, model="teacher",
              sampling={"temperature": 0.7, "max_tokens": 256, "seed": 1}, output_field="answer")

A stage returns one record (its id defaults to the input's), a list of records (ids default to
`{input id}/{k}`), or None (the record is dropped, counted as `dropped`). Raising `Reject`
rejects the input record with a reason; a `RequestError` (retries exhausted, a refused request),
a `TemplateError` and any other exception are rejects too (`request_failed`, `request_refused`,
`missing_field`, `stage_error`): one record never stops a run.

The fingerprint (`stage_fingerprint`) covers the stage's name, version, the source of its
function, its template texts, its parameters, its model id and the server's revision, and the
fingerprint of its input; a shard whose marker carries another fingerprint is recomputed (with
the cache, only requests that changed are sent).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from phi4_jax.synth.cache import canonical_json, sha256_hex
from phi4_jax.synth.client import LLMClient, Sample
from phi4_jax.synth.templates import render_messages, render_prompt

StageFn = Callable[[dict[str, Any], "StageContext"], Awaitable[Any]]


class Reject(Exception):  # noqa: N818 - a verdict, not an error
    """Raised by a stage function: the record goes to the rejects file with `reason`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a workflow (module docstring). `input`: the stage it reads (None: the
    previous stage in the workflow's list; the first stage reads the source)."""

    name: str
    fn: StageFn
    model: str | None = None  # default model name (a key of Workflow.models)
    templates: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> text
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # JSON values
    version: str = "1"
    input: str | None = None

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith((".", "_")):
            raise ValueError(f"stage name {self.name!r}: a plain directory name is needed")
        if not inspect.iscoroutinefunction(self.fn):
            raise ValueError(f"stage {self.name}: fn must be an async function")
        canonical_json(dict(self.params))  # JSON values only (ValueError / TypeError)


def code_hash(fn: Callable[..., Any]) -> str:
    """sha256 of the function's source (its module and name when the source is unavailable)."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = f"{fn.__module__}:{fn.__qualname__}"
    return hashlib.sha256(source.encode()).hexdigest()


def stage_fingerprint(stage: Stage, *, input_fingerprint: str,
                      models: Mapping[str, Mapping[str, Any]]) -> str:
    """sha256 of the stage's spec, its models' ids and revisions, and its input's fingerprint.
    `models`: model name -> {"model": id, "revision": str | None} for every model it may use."""
    return sha256_hex(canonical_json({
        "name": stage.name, "version": stage.version, "code": code_hash(stage.fn),
        "function": f"{stage.fn.__module__}:{stage.fn.__qualname__}",
        "templates": dict(stage.templates), "params": dict(stage.params),
        "model": stage.model, "models": {k: dict(v) for k, v in sorted(models.items())},
        "input": input_fingerprint}))


class StageContext:
    """What a stage function may use for one record: the clients, templates and parameters."""

    def __init__(self, stage: Stage, clients: Mapping[str, LLMClient], record_id: str):
        self.stage, self.clients, self.record_id = stage, clients, record_id
        self.params = stage.params
        self.templates = stage.templates
        self.retry = False  # retry_later() was called

    def retry_later(self) -> None:
        """Keeps the record but marks its shard to be redone by the next run, as a
        `request_failed` reject does: for a stage that catches a transient RequestError and
        goes on without that reply (the next run asks it again, the rest from the cache)."""
        self.retry = True

    def client(self, model: str | None = None) -> LLMClient:
        name = model or self.stage.model
        if name not in self.clients:
            raise KeyError(f"stage {self.stage.name}: no model {name!r}; models are "
                           f"{sorted(self.clients)}")
        return self.clients[name]

    def render(self, template: str, record: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages of template `template` (a key of the stage's templates)."""
        return render_messages(self.templates[template], record)

    def render_prompt(self, template: str, record: Mapping[str, Any]) -> str:
        return render_prompt(self.templates[template], record)

    async def chat(self, messages: Sequence[Mapping[str, Any]], *, model: str | None = None,
                   n: int = 1, attempt: int = 0, **params: Any) -> list[Sample]:
        """`n` chat samples (cached, retried); raises RequestError when they cannot be had."""
        return await self.client(model).chat(messages, n=n, record_id=self.record_id,
                                              attempt=attempt, **params)

    async def complete(self, prompt: str, *, model: str | None = None, n: int = 1,
                       attempt: int = 0, **params: Any) -> list[Sample]:
        """`n` text-completion samples of `prompt` (cached, retried)."""
        return await self.client(model).complete(prompt, n=n, record_id=self.record_id,
                                                 attempt=attempt, **params)


async def ask(record: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
    """The function of `llm_stage`: render the template, ask, parse, store in output_field.

    params: kind ('chat' | 'completions'), sampling (sent as is), n, output_field, parse
    ('text' | 'json': a JSON object reply, re-asked up to parse_retries times with a new
    cache key when it is not one)."""
    p = ctx.params
    n, parse = int(p.get("n", 1)), p.get("parse", "text")
    request = (ctx.render("prompt", record) if p["kind"] == "chat"
               else ctx.render_prompt("prompt", record))
    call = ctx.chat if p["kind"] == "chat" else ctx.complete
    values, errors = [], []
    for attempt in range(int(p.get("parse_retries", 0)) + 1):
        samples = await call(request, n=n, attempt=attempt, **dict(p.get("sampling", {})))
        try:
            values = [parse_reply(s.text, parse) for s in samples]
            break
        except ValueError as e:
            errors.append(str(e))
    else:
        raise Reject("unparseable_reply", "; ".join(errors))
    return {**record, p["output_field"]: values[0] if n == 1 else values}


def parse_reply(text: str, how: str) -> Any:
    if how == "text":
        return text
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON in the reply ({e.msg})") from None
    if not isinstance(value, dict):
        raise ValueError("the reply's JSON is not an object")
    return value


def llm_stage(name: str, *, kind: str, template: str, model: str,
              sampling: Mapping[str, Any] | None = None, n: int = 1, output_field: str = "reply",
              parse: str = "text", parse_retries: int = 0, version: str = "1",
              input: str | None = None) -> Stage:
    """A stage that asks one model with one template per record (`ask`)."""
    if kind not in ("chat", "completions"):
        raise ValueError(f"stage {name}: kind must be chat or completions, not {kind!r}")
    if parse not in ("text", "json"):
        raise ValueError(f"stage {name}: parse must be text or json, not {parse!r}")
    return Stage(name, ask, model=model, templates={"prompt": template}, version=version,
                 input=input, params={"kind": kind, "sampling": dict(sampling or {}), "n": n,
                                      "output_field": output_field, "parse": parse,
                                      "parse_retries": parse_retries})
