"""SFT conversations: their record schema, and JSONL -> a token store with assistant-only masks.

    python -m phi4_jax.data.sft --input convs.jsonl [--input more.jsonl] \\
        --output STORES/sft --max_tokens 16384

Schema (`SFTExample`, strict `parse_sft`): {"schema": "phi4_jax.sft/v1", "id", "source",
"messages": [{"role": "system" | "user" | "assistant", "content": str}], "meta"}, as the
hallucination-refusal workflow of post-training writes it.

The store builder is lenient: any object with a `messages` list is read (one whose `schema` is
set must say sft/v1). `check_messages` is the one validator of a training conversation: this
builder, the strict `parse_sft` and `python -m phi4_jax.data.prepare --format chat` all use it
(and `training_turns`, its cuts), so no path keeps a conversation another rejects. Turns are an
optional system message, then user and assistant strictly alternating from a user turn. Each
conversation is rendered with `phi4_jax.data.chat.render`, Phi-4's
ChatML `<|im_start|>role<|im_sep|>content<|im_end|>`, as it is: no BOS and no end-of-text
appended. Its loss mask is 1 on assistant content and the closing `<|im_end|>` of each assistant
turn, 0 on system / user turns and every header. The data engine (data_mixtures/phi4_sft.py:
best-fit packing, each conversation its own segment with positions from 0) shifts the mask onto
targets.

Malformed input is counted per reason in a `BadInputReport`, never fatal. The rule:

    skipped     SKIP_REASONS (invalid_json, invalid_utf8, oversized, corrupt_compressed_stream,
                not_an_object, bad_schema, missing_messages, bad_message, unknown_role,
                missing_content, system_not_first, assistant_first, turns_not_alternating,
                no_assistant_turn, duplicate_id; and too_long / empty_assistant_turn when
                nothing trainable is left after the cut)
    truncated   empty_assistant_turn: cut after the last assistant turn before the first
                assistant turn whose content is empty or whitespace; trailing_turns: messages
                after the last assistant turn are dropped (nothing to learn from them);
                too_long: cut after the last assistant turn that ends within max_tokens (whole
                turns only). Turns left dangling by an empty-turn cut belong to that cut.

The report (`SFTStats`: kept / truncated / token counts and the bad-input report) is printed
and saved as report.json / report.txt in the store directory.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from phi4_jax import cli
from phi4_jax.data import chat, tokenizer
from phi4_jax.data import record_fields as rf
from phi4_jax.data.store import Manifest, write_store
from phi4_jax.io import BadInputReport, atomic_write_json, atomic_write_text, jsonl

log = logging.getLogger(__name__)
SFT_SCHEMA = "phi4_jax.sft/v1"
ROLES = chat.ROLES
SKIP_REASONS = {
    "invalid_json": "the line is not JSON (syntax, nesting depth, number range)",
    "invalid_utf8": "the line is not UTF-8, or holds a lone surrogate",
    "oversized": "the line is longer than the reader's bound",
    "corrupt_compressed_stream": "a truncated or corrupt gzip/zstd file (earlier lines kept)",
    "not_an_object": "the line is not a JSON object",
    "bad_schema": "schema is set and is not phi4_jax.sft/v1",
    "missing_messages": "messages absent, not a list, or empty",
    "bad_message": "a message is not an object",
    "unknown_role": "a role other than system / user / assistant",
    "missing_content": "a message's content is absent or not a string",
    "system_not_first": "a system message after the first",
    "assistant_first": "the first turn after the system message is the assistant's",
    "turns_not_alternating": "two user (or two assistant) turns in a row",
    "no_assistant_turn": "no assistant message: nothing to train on",
    "duplicate_id": "an id seen before",
    "empty_assistant_turn": "the first assistant turn is empty",
    "too_long": "the first assistant turn ends beyond max_tokens",
}


# -- the record schema -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SFTExample:
    """A conversation for SFT (rendered later by the trainer's chat template)."""

    id: str
    messages: tuple[dict[str, str], ...]
    source: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SFT_SCHEMA, "id": self.id, "source": self.source,
                "messages": [dict(m) for m in self.messages], "meta": self.meta}


def parse_sft(obj: Any, vocab_size: int | None = None) -> SFTExample:
    """Validates one decoded JSON value as an SFT conversation; raises `RecordError`."""
    del vocab_size  # text records
    obj = rf.require_object(obj)
    rf.schema(obj, SFT_SCHEMA)
    messages = rf.get(obj, "messages")
    if not isinstance(messages, list) or not messages:
        raise rf.RecordError("messages", "must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise rf.RecordError(f"messages[{i}].role", f"must be one of {ROLES}")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise rf.RecordError(f"messages[{i}].content", "must be a non-empty string")
    try:
        check_messages(messages)
    except Skip as e:
        raise rf.RecordError("messages", str(e)) from None
    if messages[-1]["role"] != "assistant":
        raise rf.RecordError("messages", "the last message must be the assistant's")
    return SFTExample(id=rf.string(obj, "id"), source=rf.string(obj, "source"),
                      meta=rf.meta(obj), messages=tuple(
                          {"role": m["role"], "content": m["content"]} for m in messages))


# -- conversations -> store ------------------------------------------------------------------
class Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass
class SFTStats:
    """What a store build kept and cut; what it skipped is `bad` (reasons: SKIP_REASONS)."""

    inputs: list[str]
    max_tokens: int
    lines: int = 0
    kept: int = 0
    truncated: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    truncated_first: dict[str, str] = dataclasses.field(default_factory=dict)
    tokens: int = 0
    target_tokens: int = 0
    bad: BadInputReport = dataclasses.field(default_factory=lambda: BadInputReport(SKIP_REASONS))

    @property
    def skipped(self) -> collections.Counter:
        return self.bad.totals()

    def to_json(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "max_tokens": self.max_tokens, "lines": self.lines,
                "kept": self.kept, "truncated": dict(self.truncated),
                "truncated_first": self.truncated_first, "tokens": self.tokens,
                "target_tokens": self.target_tokens, "skipped": dict(self.skipped),
                "bad_input": self.bad.to_json()}

    def text(self) -> str:
        lines = [f"SFT conversations from {', '.join(self.inputs)} (max_tokens {self.max_tokens})",
                 f"  lines {self.lines}, kept {self.kept} ({sum(self.truncated.values())} "
                 f"truncated), skipped {sum(self.skipped.values())}",
                 f"  tokens {self.tokens}, loss tokens {self.target_tokens}"]
        lines += [f"  truncated {reason}: {n} (first at {self.truncated_first[reason]})"
                  for reason, n in self.truncated.most_common()]
        return "\n".join(lines + [self.bad.format_text(title="skipped")])


def check_messages(messages: Any) -> list[dict[str, str]]:
    """The one validator of a training conversation: its {role, content} messages, or `Skip`
    naming the reason (see the module docstring; empty assistant turns are `training_turns`')."""
    if not isinstance(messages, list) or not messages:
        raise Skip("missing_messages", "messages must be a non-empty list")
    previous = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise Skip("bad_message", f"messages[{i}] is a {type(m).__name__}, not an object")
        if m.get("role") not in ROLES:
            raise Skip("unknown_role", f"messages[{i}].role={m.get('role')!r:.40} not in {ROLES}")
        if not isinstance(m.get("content"), str):
            raise Skip("missing_content", f"messages[{i}].content is missing or not a string")
        role = m["role"]
        if role == "system" and i:
            raise Skip("system_not_first", f"messages[{i}] is a system message")
        if role == "assistant" and previous is None:
            raise Skip("assistant_first", f"messages[{i}]: the conversation starts with an "
                                          "assistant turn (the first turn is the user's)")
        if role == previous:
            raise Skip("turns_not_alternating", f"messages[{i}]: a second {role} turn in a row")
        previous = previous if role == "system" else role
    if not any(m["role"] == "assistant" for m in messages):
        raise Skip("no_assistant_turn", "no assistant message: nothing to train on")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def check(obj: Any) -> list[dict[str, str]]:
    """The conversation's messages of a record, or `Skip` naming the reason."""
    if not isinstance(obj, dict):
        raise Skip("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if "schema" in obj and obj["schema"] != SFT_SCHEMA:
        raise Skip("bad_schema", f"schema {obj['schema']!r:.60} is not {SFT_SCHEMA!r}")
    return check_messages(obj.get("messages"))


def training_turns(messages: Any) -> tuple[list[dict[str, str]], list[str]]:
    """(the turns trained on, the cuts made): `check_messages`, then the cut after the last
    assistant turn before the first empty one, and the drop of turns after the last assistant
    turn. `Skip` when nothing trainable is left."""
    messages = check_messages(messages)
    cuts = []
    empty = [i for i, m in enumerate(messages)
             if m["role"] == "assistant" and not m["content"].strip()]
    if empty:
        messages = messages[:empty[0]]
        if not any(m["role"] == "assistant" for m in messages):
            raise Skip("empty_assistant_turn", f"messages[{empty[0]}]: empty assistant turn "
                                               "and no assistant turn before it")
        cuts.append("empty_assistant_turn")
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if last + 1 < len(messages):
        messages = messages[:last + 1]
        cuts = cuts or ["trailing_turns"]  # after an empty turn's cut: part of that cut
    return messages, cuts


def convert(obj: Any, *, max_tokens: int, encoding: Any = None
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids, loss mask, truncation reasons) of one conversation under the module's rules."""
    messages, cuts = training_turns(check(obj))
    # ChatML is a concatenation of per-message renders, so turns can be cut at their ends.
    pieces = [chat.render([m], encoding=encoding, require_assistant=False) for m in messages]
    ends = np.cumsum([len(ids) for ids, _ in pieces])
    if ends[-1] > max_tokens:
        fits = [i for i, m in enumerate(messages) if m["role"] == "assistant"
                and ends[i] <= max_tokens]
        if not fits:
            first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
            raise Skip("too_long", f"{ends[first]} tokens up to the first assistant turn's end "
                                   f"> max_tokens={max_tokens}")
        pieces = pieces[:fits[-1] + 1]
        cuts.append("too_long")
    ids = np.concatenate([p[0] for p in pieces]).astype(np.int32)
    mask = np.concatenate([p[1] for p in pieces]).astype(np.uint8)
    return ids, mask, cuts


_LINE_REASONS = {"malformed_json": "invalid_json"}  # jsonl.read_lines' reasons -> SKIP_REASONS


def read_conversations(paths: Sequence[str], stats: SFTStats, *, max_tokens: int,
                       encoding: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rendered (ids, mask) of every usable conversation; the rest is counted in `stats.bad`."""
    enc = encoding or tokenizer.phi4_encoding()
    seen: set[str] = set()
    t0 = time.perf_counter()
    for path in paths:
        stats.bad.file(path)
        for line_no, obj, error in jsonl.read_lines(path):
            stats.lines += 1
            where = f"{path}:{line_no}"
            try:
                if error is not None:
                    raise Skip(_LINE_REASONS.get(error.reason, error.reason), error)
                key = obj.get("id") if isinstance(obj, dict) else None
                if isinstance(key, str) and key in seen:
                    raise Skip("duplicate_id", f"id {key!r} seen before")
                ids, mask, cuts = convert(obj, max_tokens=max_tokens, encoding=enc)
            except Skip as s:
                stats.bad.bad(path, s.reason, where, str(s))
                continue
            if isinstance(key, str):
                seen.add(key)
            for reason in cuts:
                stats.truncated[reason] += 1
                stats.truncated_first.setdefault(reason, f"{where}: kept {len(ids)} tokens")
            stats.bad.ok(path)
            stats.kept += 1
            stats.tokens += len(ids)
            stats.target_tokens += int(mask.sum())
            if stats.lines % 10_000 == 0:
                log.info("%s: %d lines, %d kept, %.0f lines/s", path, stats.lines,
                         stats.kept, stats.lines / (time.perf_counter() - t0))
            yield ids, mask


def build_store(inputs: Sequence[str], output: str, *, max_tokens: int, source_name: str = "sft",
                encoding: Any = None) -> tuple[Manifest, SFTStats]:
    """Writes the store at `output` (with report.json / report.txt) and returns both."""
    stats = SFTStats(inputs=[str(p) for p in inputs], max_tokens=max_tokens)
    masks: collections.deque = collections.deque()

    def documents():
        for ids, mask in read_conversations(stats.inputs, stats, max_tokens=max_tokens,
                                            encoding=encoding):
            masks.append(mask)
            yield ids

    def loss_masks():
        while True:
            yield masks.popleft()

    manifest = write_store(output, source_name, documents(), loss_masks=loss_masks(),
                           info={"kind": "sft", "max_tokens": max_tokens,
                                 "inputs": stats.inputs})
    atomic_write_json(os.path.join(output, "report.json"), stats.to_json())
    atomic_write_text(os.path.join(output, "report.txt"), stats.text() + "\n")
    return manifest, stats


PROG = "python -m phi4_jax.data.sft"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = cli.parser(prog, __doc__.split("\n\n")[0],
                        example=" ".join(__doc__.split("\n\n")[1].replace("\\", "").split()))
    parser.add_argument("--input", action="append", default=[],
                        help="conversations JSONL (repeatable)")
    parser.add_argument("--output", required=True, help="the store directory to write")
    parser.add_argument("--max_tokens", type=int, default=16384,
                        help="longest conversation kept (the SFT data.seq_len)")
    parser.add_argument("--source_name", default="sft", help="the store's source name")
    return parser


def run(args: argparse.Namespace, inputs: Sequence[str]) -> int:
    """Builds the store of `inputs` under the parsed flags; 0 if any conversation was kept."""
    for path in inputs:
        if not os.path.exists(path):
            raise cli.UsageError(f"--input {path}: no such file")
        if not os.path.isfile(path):
            raise cli.UsageError(f"--input {path}: not a regular file (a directory, FIFO, "
                                 "socket or device is never read)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest, stats = build_store(inputs, args.output, max_tokens=args.max_tokens,
                                  source_name=args.source_name)
    print(stats.text())
    print(f"{args.output}: {manifest.num_documents} conversations, {manifest.num_tokens} tokens")
    return 0 if stats.kept else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.input:
        parser.error("give --input FILE (repeatable)")
    return run(args, args.input)


if __name__ == "__main__":
    cli.run(main, prog=PROG)
