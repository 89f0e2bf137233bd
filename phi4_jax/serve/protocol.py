"""The OpenAI wire format: request bodies (pydantic, unknown fields rejected) and error objects.

Errors are OpenAI's object, `{"error": {"message", "type", "param", "code"}}`, with status 400
for a malformed body or a bad value (`param` names the field, e.g. "temperature",
"messages[1].role"), 404 for an unknown model, 429 when the queue is full (`Retry-After`) and
503 while shutting down. Fields OpenAI defines but this server does not implement are accepted
at their neutral value only (frequency_penalty 0, best_of = n, ...); anything else is "not
supported" (400), so a client never silently gets something other than what it asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

Number = StrictFloat | StrictInt
MAX_STOP = 4  # stop sequences per request (OpenAI's limit)
MAX_LOGPROBS = 5  # top alternatives per position (OpenAI's limit for completions)
MAX_CHAT_TOP_LOGPROBS = 20


class APIError(Exception):
    """An error answered as OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (status, message, param,
                                                                        code, kind)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def bad(message: str, param: str | None, code: str | None = None) -> APIError:
    """A 400 invalid_request_error naming `param`."""
    return APIError(400, message, param=param, code=code)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class _Sampling(_Strict):
    """Fields shared by both endpoints."""

    model: StrictStr
    temperature: Number = Field(1.0, ge=0, le=2)
    top_p: Number = Field(1.0, gt=0, le=1)
    n: StrictInt = Field(1, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    # Defined by OpenAI, accepted only at their neutral values (`check_unsupported`).
    frequency_penalty: Number = 0
    presence_penalty: Number = 0
    logit_bias: dict[str, Any] | None = None

    def stops(self) -> list[str]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > MAX_STOP:
            raise bad(f"stop: at most {MAX_STOP} stop sequences, got {len(stop)}", "stop")
        if any(s == "" for s in stop):
            raise bad("stop: a stop sequence must not be empty", "stop")
        return stop

    def check_unsupported(self) -> None:
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) != 0:
                raise bad(f"{name} is not supported by this server (only 0)", name)
        if self.logit_bias:
            raise bad("logit_bias is not supported by this server", "logit_bias")


class CompletionRequest(_Sampling):
    """POST /v1/completions."""

    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    max_tokens: StrictInt | None = Field(16, ge=0)
    logprobs: StrictInt | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: StrictBool = False
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.best_of is not None and self.best_of != self.n:
            raise bad("best_of is not supported by this server (only best_of = n)", "best_of")
        if self.suffix:
            raise bad("suffix is not supported by this server", "suffix")


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class Message(_Strict):
    role: StrictStr
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    """POST /v1/chat/completions."""

    messages: list[Message]
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=MAX_CHAT_TOP_LOGPROBS)
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    # vLLM's extensions: the last (assistant) message is a prefix the reply continues.
    continue_final_message: StrictBool = False
    add_generation_prompt: StrictBool = True

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.continue_final_message and self.add_generation_prompt:
            raise bad("continue_final_message needs add_generation_prompt: false",
                      "add_generation_prompt")
        if not self.continue_final_message and not self.add_generation_prompt:
            raise bad("add_generation_prompt: false is supported only with "
                      "continue_final_message: true", "add_generation_prompt")
        if self.continue_final_message and (not self.messages
                                            or self.messages[-1].role != "assistant"):
            raise bad("continue_final_message: the last message must be the assistant's",
                      "continue_final_message")
        if self.tools:
            raise bad("tools are not supported by this server", "tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise bad("response_format other than text is not supported by this server",
                      "response_format")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad("top_logprobs needs logprobs: true", "top_logprobs")


class TokenizeRequest(_Strict):
    """POST /tokenize (vLLM's; lm-eval's remote tokenizer uses it)."""

    prompt: StrictStr
    add_special_tokens: StrictBool = False
    model: StrictStr | None = None


class DetokenizeRequest(_Strict):
    """POST /detokenize."""

    tokens: list[StrictInt]
    model: StrictStr | None = None


_UNION_HELP = {
    "prompt": "prompt must be a string, a list of strings, a list of token ids or a list of "
              "lists of token ids",
    "stop": "stop must be a string or a list of strings",
    "content": "content must be a string or a list of text parts",
}
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "function-after"}


def _param(loc: tuple[Any, ...]) -> str:
    """'messages[1].role' from pydantic's loc, without its union-member tags."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_TAGS or "[" in str(part) or str(part).startswith("constrained"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def from_validation(err: ValidationError | Any) -> APIError:
    """The first problem of a pydantic error as a 400 naming the field."""
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "extra_forbidden":
        return bad(f"Unrecognized request argument supplied: {_param(loc)}", _param(loc))
    if first.get("type") == "missing":
        return bad(f"Missing required parameter: {_param(loc)}", _param(loc))
    param = _param(loc)
    field = param.split(".")[-1].split("[")[0]
    if field in _UNION_HELP and len(err.errors()) > 1:
        return bad(f"{param}: {_UNION_HELP[field]}", param)
    return bad(f"{param}: {first.get('msg', 'invalid value')}", param)


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validates a decoded JSON body; raises APIError (400) naming the field."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object", None)
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise from_validation(e) from None
