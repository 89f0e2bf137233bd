"""The judge and refusal jobs' plumbing: their flags, their workflow run, Phi-4 token ids.

Both jobs are workflows on the data-workflow engine (`phi4_jax.synth`, docs/synth.md): their
requests go through its client (bounded concurrency, retries with backoff, a content-addressed
cache) to any OpenAI-compatible server (OpenAI, vLLM, SGLang, `phi4_jax.serve`, ...), and their
work is kept in engine shards under OUTPUT/workflow/, so a killed run resumes and a finished
one reruns with zero requests.

`add_server_flags` declares a server's flags (`--base_url`, `--model`, `--api_key_env`; with a
prefix, e.g. `--teacher_base_url`); the key is read from the environment variable the flag
names and is never printed or written. `add_request_flags` declares those of a command that
sends many requests and writes pairs (`--max_workers`, `--max_retries`, `--timeout`,
`--tokenizer_name`, `--quiet`, and the engine's `--runner`, `--cache`, `--shard_size`);
`start_command` parses such a command line (its --input a regular file; unknown flags go to a
Beam runner) and writes its job record; `model_config` and `run_job` make and run the workflow;
`rejects` reads what its stages rejected. `Phi4Text` turns prompts and replies into the Phi-4
ChatML token ids a pair is written in (`phi4_jax.data.chat`): the text a server returns is
encoded again, so a pair's ids are those of its text, not necessarily the ids the server's
model sampled.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from phi4_jax import cli, runs, synth
from phi4_jax.synth import shards

ENGINE_DIR = "workflow"  # OUTPUT/workflow: the engine's shards, markers, manifest and cache


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
    parser.add_argument("--runner", default="inprocess",
                        help="inprocess, or an Apache Beam runner (FnApiRunner, DataflowRunner, "
                             "...); unknown flags go to Beam (docs/synth.md)")
    parser.add_argument("--cache", default=None,
                        help="request cache file, to share one across jobs (default "
                             f"OUTPUT/{ENGINE_DIR}/cache.sqlite)")
    parser.add_argument("--shard_size", type=int, default=64,
                        help="input records per engine shard (the unit of resume)")


def start_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str
                  ) -> tuple[argparse.Namespace, list[str]]:
    """The flags of a judge or refusal command line and its Beam flags, once its --input is
    known to be a regular file (else a one-line user error) and its job record is written."""
    args, beam_args = parser.parse_known_args(cli.strip_debug(
        list(sys.argv[1:] if argv is None else argv)))
    if beam_args and args.runner == "inprocess":
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    if not os.path.isfile(args.input):
        raise cli.UsageError(f"--input {args.input}: " + (
            "not a regular file" if os.path.exists(args.input) else "no such file"))
    runs.write_job_record(args.output, job=prog, argv=argv, config=vars(args),
                          inputs=[args.input])
    return args, beam_args


def model_config(model: str, *, base_url: str | None, api_key_env: str | None,
                 args: argparse.Namespace) -> synth.ModelConfig:
    """The engine's model config from the request flags. An unset key variable sends no key
    (local servers need none); no server revision is asked (none of ours reports one)."""
    env = api_key_env if api_key_env and os.environ.get(api_key_env) else None
    return synth.ModelConfig(model=model, base_url=base_url, api_key_env=env, revision=None,
                             concurrency=args.max_workers, timeout_s=args.timeout,
                             max_retries=args.max_retries)


def run_job(workflow: synth.Workflow, args: argparse.Namespace, beam_args: Sequence[str]
            ) -> synth.RunResult:
    """Runs (or resumes) the job's workflow in OUTPUT/workflow."""
    return synth.run_workflow(workflow, os.path.join(args.output, ENGINE_DIR),
                              runner=args.runner, beam_args=beam_args, progress=not args.quiet)


def rejects(result: synth.RunResult, stage: str | None) -> Iterator[dict[str, Any]]:
    """The rejects of a finished stage (None: the source), in shard order."""
    if stage is None:
        yield from shards.read_shard(os.path.join(shards.source_dir(result.output),
                                                  "rejects.jsonl"))
        return
    for index in range(result.num_shards):
        yield from shards.read_shard(shards.shard_file(result.output, stage, index,
                                                       ".rejects.jsonl"))


@functools.lru_cache(maxsize=4)
def phi4_text(tokenizer_name: str = "phi4") -> Phi4Text:
    """One `Phi4Text` per process (stage functions tokenize many records)."""
    return Phi4Text(tokenizer_name)


class Phi4Text:
    """Phi-4 token ids of chat prompts and replies (tiktoken "phi4" encoding, ChatML).

    `render(messages)` ends where the assistant's reply begins; `reply_ids(text, finished)` appends
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

    def reply_ids(self, text: str, finished: bool) -> tuple[int, ...]:
        """The ids of a reply's text, then <|im_end|> if the model ended it (not cut)."""
        return tuple(self.encode(text)) + (self.end_ids if finished else ())
