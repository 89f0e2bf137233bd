"""Models behind an OpenAI-compatible server, and Phi-4 token ids for the text they return.

The judge and refusal command lines talk to any OpenAI-compatible chat server (OpenAI, vLLM,
SGLang, llama.cpp's server, ...) through the `openai` client, whose own retries cover
408/409/429/5xx and connection errors (honouring Retry-After):

    model = ChatModel.connect("phi-4", base_url="http://localhost:8000/v1",
                              api_key_env="OPENAI_API_KEY")
    replies = model.sample([{"role": "user", "content": "Hi"}], n=4, temperature=1.0)

`add_server_flags` declares a server's flags (`--base_url`, `--model`, `--api_key_env`; with a
prefix, e.g. `--teacher_base_url`); the key is read from the environment variable the flag
names and is never printed or written. `add_request_flags` declares those of a command that
sends many requests and writes pairs (`--max_workers`, `--max_retries`, `--timeout`,
`--tokenizer_name`, `--quiet`), and `start_command` parses such a command line (its --input a
regular file) and writes its job record. `Phi4Text` turns prompts and replies into the Phi-4
ChatML token ids a pair is written in (`phi4_jax.data.chat`): the text a server returns is
encoded again, so a pair's ids are those of its text, not necessarily the ids the server's
model sampled.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from phi4_jax import cli, runs


class ServerError(RuntimeError):
    """The server did not answer (after the client's own transport-level retries)."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """One chat completion: its text, and whether the model ended it (finish_reason 'stop')."""

    text: str
    finished: bool


def api_key(env: str | None) -> str:
    """The key in environment variable `env`; 'unused' when unset (local servers need none)."""
    return (os.environ.get(env) if env else None) or "unused"


class ChatModel:
    """A model name on an OpenAI-compatible server; `client` is an `openai.OpenAI`."""

    def __init__(self, client: Any, model: str, *, max_tokens: int = 1024):
        self.client, self.name, self.max_tokens = client, model, max_tokens

    @classmethod
    def connect(cls, model: str, *, base_url: str | None = None, api_key_env: str | None = None,
                max_retries: int = 3, timeout: float = 120.0, max_tokens: int = 1024
                ) -> ChatModel:
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=api_key(api_key_env),
                               max_retries=max_retries, timeout=timeout)
        return cls(client, model, max_tokens=max_tokens)

    def complete(self, messages: Sequence[dict[str, str]], *, n: int = 1,
                 temperature: float = 0.0, max_tokens: int | None = None,
                 **kwargs: Any) -> list[Reply]:
        """Up to `n` replies of one request (a server may return fewer); `ServerError` if the
        server cannot be reached or answers with an error."""
        import openai

        try:
            out = self.client.chat.completions.create(
                model=self.name, messages=list(messages), temperature=temperature,
                max_tokens=max_tokens or self.max_tokens, **({"n": n} if n != 1 else {}),
                **kwargs)
        except openai.APIError as e:
            raise ServerError(f"{type(e).__name__}: {e}") from e
        return [Reply(c.message.content or "", c.finish_reason == "stop")
                for c in (out.choices or [])]

    def sample(self, messages: Sequence[dict[str, str]], n: int, *, temperature: float = 1.0,
               max_tokens: int | None = None) -> list[Reply]:
        """Exactly `n` sampled replies: one request for all of them, then one per missing reply
        (for servers that ignore `n`)."""
        replies = self.complete(messages, n=n, temperature=temperature, max_tokens=max_tokens)
        while len(replies) < n:
            more = self.complete(messages, temperature=temperature, max_tokens=max_tokens)
            if not more:
                raise ServerError(f"{self.name}: a reply without choices")
            replies += more
        return replies[:n]


def add_server_flags(parser: argparse.ArgumentParser, prefix: str = "", *, what: str,
                     model: bool = True) -> None:
    """--{prefix}base_url, --{prefix}api_key_env and (if `model`) a required --{prefix}model
    for the server of `what`; prefixed flags default to the unprefixed ones (None here)."""
    fallback = " (default: the same as without the prefix)" if prefix else ""
    parser.add_argument(f"--{prefix}base_url", default=None,
                        help=f"OpenAI-compatible endpoint of {what}, e.g. "
                             f"http://localhost:8000/v1{fallback}")
    if model:
        parser.add_argument(f"--{prefix}model", required=True,
                            help=f"model name of {what} on that server")
    parser.add_argument(f"--{prefix}api_key_env", default=None if prefix else "OPENAI_API_KEY",
                        help="name of the environment variable holding the API key"
                             + (fallback or " (unset variable: no key is sent)"))



def add_request_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a command that sends many requests and writes pairs in Phi-4 ids:
    concurrency, the client's retries and timeout, the pairs' tokenizer field, progress bar."""
    parser.add_argument("--max_workers", type=int, default=8, help="concurrent requests")
    parser.add_argument("--max_retries", type=int, default=3, help="client retries per request")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--tokenizer_name", default="phi4",
                        help="the pairs' tokenizer field (match the other dpo.pairs files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def start_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str
                  ) -> argparse.Namespace:
    """The flags of a judge or refusal command line, once its --input is known to be a regular
    file (else a one-line user error) and its job record is written in --output."""
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        raise cli.UsageError(f"--input {args.input}: " + (
            "not a regular file" if os.path.exists(args.input) else "no such file"))
    runs.write_job_record(args.output, job=prog, argv=argv, config=vars(args),
                          inputs=[args.input])
    return args


class Phi4Text:
    """Phi-4 token ids of chat prompts and replies (tiktoken "phi4" encoding, ChatML).

    `render(messages)` ends where the assistant's reply begins; `reply_ids(reply)` appends
    `<|im_end|>` when the reply is complete, so a trained pair also teaches the model to stop.
    `tokenizer_name` is what pairs record in their `tokenizer` field.
    """

    def __init__(self, tokenizer_name: str = "phi4"):
        from phi4_jax.data import tokenizer

        self.tokenizer_name = tokenizer_name
        self.encoding = tokenizer.phi4_encoding()
        self.end_ids = (tokenizer.IM_END,)
        self.vocab_size = tokenizer.VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode_ordinary(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode([i for i in ids if i not in self.end_ids])

    def render(self, messages: Sequence[dict[str, str]]) -> list[int]:
        from phi4_jax.data import chat

        ids, _ = chat.render(list(messages), encoding=self.encoding, add_generation_prompt=True)
        return [int(i) for i in ids]

    def reply_ids(self, reply: Reply) -> tuple[int, ...]:
        return tuple(self.encode(reply.text)) + (self.end_ids if reply.finished else ())
