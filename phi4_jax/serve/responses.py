"""OpenAI response bodies from finished (or streaming) jobs: completions, chat, their chunks.

Completions `logprobs` is the legacy object {tokens, token_logprobs, top_logprobs,
text_offset}: with `echo` it starts with the prompt's tokens (the first one's log-prob and
top_logprobs are null), and each top_logprobs entry maps token text to log-prob for the
`logprobs` best tokens plus the chosen one. text_offset counts characters of the returned text.
That is the shape lm-eval-harness's `local-completions` parses (token_logprobs[ctxlen:-1] and
the greedy check against max(top_logprobs)). Chat `logprobs` is {"content": [{token, logprob,
bytes, top_logprobs: [{token, logprob, bytes}]}]}.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from phi4_jax.serve.jobs import Choice, Job


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Builder:
    """Response pieces for one request: its id, creation time and the model name."""

    def __init__(self, codec: Any, model: str, kind: str):
        self.codec, self.model, self.kind = codec, model, kind
        self.id = new_id("cmpl" if kind == "completion" else "chatcmpl")
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    # -- completions -------------------------------------------------------------------------
    def completion(self, job: Job, prompt_texts: list[str], echo: bool) -> dict[str, Any]:
        choices = []
        for c in job.choices:
            text = (prompt_texts[c.prompt_index] if echo else "") + c.text
            logprobs = (None if job.top_n is None
                        else self.completion_logprobs(job, c, echo, c.tokens, c.logprobs, c.top))
            choices.append({"text": text, "index": c.index, "logprobs": logprobs,
                            "finish_reason": public_reason(c)})
        return {**self._head("text_completion"), "choices": choices, "usage": job.usage()}

    def completion_logprobs(self, job: Job, c: Choice, echo: bool, tokens: list[int],
                            logprobs: list[float], top: list[Any]) -> dict[str, Any]:
        ids: list[int] = []
        lps: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        if echo:
            score = job.prompt_scores[c.prompt_index]
            ids += job.prompts[c.prompt_index]
            lps += score.logprobs if score else [None] * len(ids)
            tops += [None if t is None else self._top_dict(t) for t in
                     (score.top if score else [None] * len(ids))]
        ids += tokens
        lps += logprobs
        tops += [self._top_dict(t) for t in top] if top else [{} for _ in tokens]
        texts = [self.codec.token_text(i) for i in ids]
        offsets, at = [], 0
        for t in texts:
            offsets.append(at)
            at += len(t)
        return {"tokens": texts, "token_logprobs": lps, "top_logprobs": tops,
                "text_offset": offsets}

    def _top_dict(self, pairs: list[tuple[int, float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for token, lp in pairs:
            key = self.codec.token_text(token)
            out[key] = max(lp, out.get(key, lp))
        return out

    def completion_chunk(self, job: Job, c: Choice, text: str, first: int, echo_text: str
                         ) -> dict[str, Any]:
        logprobs = None
        if job.top_n is not None:
            logprobs = self.completion_logprobs(job, c, False, c.tokens[first:],
                                                c.logprobs[first:], c.top[first:])
        return {**self._head("text_completion"),
                "choices": [{"text": echo_text + text, "index": c.index, "logprobs": logprobs,
                             "finish_reason": public_reason(c)}]}

    # -- chat --------------------------------------------------------------------------------
    def chat(self, job: Job) -> dict[str, Any]:
        choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                    "logprobs": self.chat_logprobs(job, c, 0),
                    "finish_reason": public_reason(c)} for c in job.choices]
        return {**self._head("chat.completion"), "choices": choices, "usage": job.usage()}

    def chat_logprobs(self, job: Job, c: Choice, first: int) -> dict[str, Any] | None:
        if job.top_n is None:
            return None
        content = []
        for k in range(first, len(c.tokens)):
            alts = c.top[k][:job.top_n] if k < len(c.top) else []
            content.append({**self._entry(c.tokens[k], c.logprobs[k]),
                            "top_logprobs": [self._entry(t, lp) for t, lp in alts]})
        return {"content": content}

    def _entry(self, token: int, lp: float) -> dict[str, Any]:
        text = self.codec.token_text(token)
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    def chat_chunk(self, job: Job, c: Choice, text: str | None, first: int,
                   role: bool = False) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None and (text or not c.finished):
            delta["content"] = text
        return {**self._head("chat.completion.chunk"),
                "choices": [{"index": c.index, "delta": delta,
                             "logprobs": None if role else self.chat_logprobs(job, c, first),
                             "finish_reason": None if role else public_reason(c)}]}

    def usage_chunk(self, job: Job) -> dict[str, Any]:
        obj = "text_completion" if self.kind == "completion" else "chat.completion.chunk"
        return {**self._head(obj), "choices": [], "usage": job.usage()}


def public_reason(c: Choice) -> str | None:
    """finish_reason as OpenAI reports it ("stop" or "length"; None while running)."""
    return c.finish_reason if c.finish_reason in ("stop", "length") else None
