"""A request as the scheduler sees it (`Job`), its output rows (`Choice`) and their text.

A `Job` holds token-id prompts, n samples each, sampling settings and what to report; its
choices are numbered prompt_index * n + sample, the OpenAI order, and sample k of the job is
drawn with the key fold_in(key(seed), k). The scheduler thread fills choices; the request's
event loop reads them once `sink` delivers ("done", job) (or a ("delta", [...]) per segment
when streaming, or ("error", APIError)).

Text: a choice's text is its tokens decoded without special tokens, cut before the first stop
string. While streaming, text that could still become a stop string (the last
max(len(stop)) - 1 characters) or an incomplete UTF-8 character is held back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from phi4_jax.inference.sampling import SamplingConfig


@dataclasses.dataclass
class Choice:
    """One output row: generated tokens (the stop token not included), their log-probs and
    top alternatives [(id, logprob)], the text so far and how much of it was streamed."""

    index: int
    prompt_index: int
    tokens: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    top: list[list[tuple[int, float]]] = dataclasses.field(default_factory=list)
    generated: int = 0  # tokens the model produced, stop token included (usage)
    text: str = ""
    sent: int = 0
    sent_tokens: int = 0
    finish_reason: str | None = None
    announced: bool = False  # its finish was streamed

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclasses.dataclass
class PromptScore:
    """Echoed prompt log-probs: per token (None for the first) and top alternatives."""

    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]


@dataclasses.dataclass(eq=False)
class Job:
    """One request's work. `top_n` None means no log-probs; `score_prompt` asks for the
    prompt's own log-probs (echo + logprobs)."""

    prompts: list[list[int]]
    n: int
    max_tokens: int
    sampling: SamplingConfig
    seed: int
    stops: list[str]
    top_n: int | None
    score_prompt: bool
    stream: bool
    sink: Callable[[tuple[str, Any]], None]
    choices: list[Choice] = dataclasses.field(default_factory=list)
    prompt_scores: list[PromptScore | None] = dataclasses.field(default_factory=list)
    cancelled: bool = False
    next_group: int = 0  # prompts scheduled into waves so far
    scored: bool = False
    answered: bool = False
    submitted: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.choices = [Choice(i * self.n + j, i) for i in range(len(self.prompts))
                        for j in range(self.n)]
        self.prompt_scores = [None] * len(self.prompts)

    @property
    def needs_decode(self) -> bool:
        """Whether rows must be decoded (max_tokens 0 generates nothing; echo + logprobs with
        max_tokens 1 takes its one token from the scoring pass)."""
        return self.max_tokens > 1 or (self.max_tokens == 1 and not self.score_prompt)

    @property
    def complete(self) -> bool:
        return all(c.finished for c in self.choices) and (self.scored or not self.score_prompt)

    def started(self) -> bool:
        return self.next_group > 0 or self.scored

    def usage(self) -> dict[str, int]:
        prompt = sum(len(p) for p in self.prompts)
        completion = sum(c.generated for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}


class TextState:
    """Incremental detokenization and stop strings for the choices of one job."""

    def __init__(self, codec: Any, stops: Sequence[str]):
        self.codec, self.stops = codec, list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def add(self, choice: Choice, tokens: Sequence[int], logprobs: Sequence[float],
            top: Sequence[list[tuple[int, float]]] | None) -> bool:
        """Appends tokens; True when a stop string ended the choice (its text is cut there)."""
        choice.tokens.extend(int(t) for t in tokens)
        choice.logprobs.extend(float(x) for x in logprobs)
        if top is not None:
            choice.top.extend(top)
        before = len(choice.text)
        choice.text = self.codec.decode(choice.tokens)
        if not self.stops:
            return False
        start = max(0, before - self.hold)
        hits = [i for i in (choice.text.find(s, start) for s in self.stops) if i >= 0]
        if not hits:
            return False
        self._cut(choice, min(hits))
        return True

    def _cut(self, choice: Choice, at: int) -> None:
        """Text ends at `at`; tokens (and log-probs) keep the shortest prefix covering it."""
        keep = len(choice.tokens)
        for k in range(1, len(choice.tokens) + 1):
            if len(self.codec.decode(choice.tokens[:k])) >= at:
                keep = k
                break
        choice.text = choice.text[:at]
        del choice.tokens[keep:], choice.logprobs[keep:], choice.top[keep:]

    def delta(self, choice: Choice) -> tuple[str, int]:
        """(text not streamed yet that is safe to send, tokens up to now); advances `sent`."""
        end = len(choice.text)
        if not choice.finished:
            end -= self.hold
            while end > choice.sent and choice.text[end - 1] == "\ufffd":
                end -= 1
        end = max(end, choice.sent)
        out = choice.text[choice.sent:end]
        choice.sent = end
        tokens = len(choice.tokens)
        first = choice.sent_tokens
        choice.sent_tokens = tokens
        return out, first
