"""A tiny workflow for the engine tests: stage functions, templates and a config-file writer.

Three stages over QUESTIONS records: `answer` (a chat template stage), `vote` (a Python stage:
three text-completion samples per record) and `check` (a validator that rejects ids ending in
3, and fans q0 out into two records).
"""

from __future__ import annotations

import json
import os
import textwrap

from phi4_jax.synth import Reject

ANSWER = "### system\nBe brief.\n### user\nQ: ${question}\n"
VOTE = "Vote on: ${question} / ${answer}\n"


async def vote(record, ctx):
    samples = await ctx.complete(ctx.render_prompt("vote", record), n=3,
                                 **ctx.params["sampling"])
    return {**record, "votes": [s.text for s in samples]}


async def check(record, ctx):
    if str(record["id"]).endswith("3"):
        raise Reject("validator", f"{record['id']} ends in 3")
    if record["id"] == "q0":
        return [{**record, "part": 1}, {**record, "part": 2}]
    return record


def write_inputs(folder: str, n: int = 12, bad_lines: bool = True) -> str:
    path = os.path.join(folder, "questions.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "question": f"what is {i} + {i}?"}) + "\n")
            if bad_lines and i == 4:
                f.write("{not json\n")
                f.write(json.dumps({"question": "no id"}) + "\n")
    return path


def write_config(folder: str, url: str, *, answer_template: str = ANSWER,
                 vote_template: str = VOTE, shard_size: int = 4, revision: str = "auto",
                 api_key_env: str | None = None, max_retries: int = 4, timeout_s: float = 5.0,
                 concurrency: int = 4) -> str:
    """Writes questions.jsonl, the two templates and workflow.py into `folder`."""
    write_inputs(folder)
    with open(os.path.join(folder, "answer.txt"), "w", encoding="utf-8") as f:
        f.write(answer_template)
    with open(os.path.join(folder, "vote.txt"), "w", encoding="utf-8") as f:
        f.write(vote_template)
    path = os.path.join(folder, "workflow.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(f'''\
            """The engine tests' workflow: python -m phi4_jax.synth.run workflow.py --output=OUT"""


            def get_config(arg=None):
                return {{
                    "name": "qa", "inputs": ["questions.jsonl"], "shard_size": {shard_size},
                    "models": {{"teacher": {{
                        "model": "scripted", "base_url": {url!r}, "revision": {revision!r},
                        "api_key_env": {api_key_env!r}, "max_retries": {max_retries},
                        "timeout_s": {timeout_s}, "concurrency": {concurrency},
                        "initial_backoff_s": 0.01, "max_backoff_s": 0.05}}}},
                    "stages": [
                        {{"name": "answer", "kind": "chat", "template": "answer.txt",
                          "model": "teacher", "output_field": "answer",
                          "sampling": {{"temperature": 0.5, "seed": 7, "max_tokens": 16}}}},
                        {{"name": "vote", "kind": "python",
                          "fn": "tests.synth.engine_stages:vote", "model": "teacher",
                          "templates": {{"vote": "vote.txt"}},
                          "params": {{"sampling": {{"temperature": 1.0, "max_tokens": 4}}}}}},
                        {{"name": "check", "kind": "python",
                          "fn": "tests.synth.engine_stages:check"}},
                    ],
                    "exports": {{"check": "final.jsonl"}},
                }}
            '''))
    return path


SKIP = ("runs.jsonl", "cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm")


def tree(output: str) -> dict[str, bytes]:
    """Every file of an output directory but the run record and the cache: relpath -> bytes."""
    out = {}
    for dirpath, _, files in os.walk(output):
        for name in files:
            if name in SKIP:
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, output)] = f.read()
    return out
