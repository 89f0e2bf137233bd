"""SFT conversations (JSONL) -> a token store with assistant-only loss masks, for the data engine.

    python -m phi4_jax.posttrain.sft_data --input convs.jsonl [--input more.jsonl] \\
        --output STORES/sft --max_tokens 16384
    python -m phi4_jax.posttrain.sft_data --demo 400 --output STORES/sft --max_tokens 128

Input: one JSON object per line with `messages`, a list of {"role": "system" | "user" |
"assistant", "content": str} (the `phi4_jax.sft/v1` records of refusal.py, or any object with a
messages list; an object whose `schema` is set must say sft/v1). Each conversation is rendered
with `phi4_jax.data.chat.render`, Phi-4's ChatML `<|im_start|>role<|im_sep|>content<|im_end|>`,
as it is: no BOS and no end-of-text appended. Its loss mask is 1 on assistant content and the
closing `<|im_end|>` of each assistant turn, 0 on system / user turns and every header. The data
engine (data_mixtures/phi4_sft.py: best-fit packing, each conversation its own segment with
positions from 0) shifts the mask onto targets.

Malformed input is counted per reason, never fatal. The rule:

    skipped     invalid_json, not_an_object, bad_schema, missing_messages (absent, not a list,
                or empty), bad_message (not an object), unknown_role, missing_content (absent
                or not a string), system_not_first, no_assistant_turn, duplicate_id; and
                too_long / empty_assistant_turn when nothing trainable is left after the cut
    truncated   empty_assistant_turn: cut after the last assistant turn before the first
                assistant turn whose content is empty or whitespace; trailing_turns: messages
                after the last assistant turn are dropped (nothing to learn from them);
                too_long: cut after the last assistant turn that ends within max_tokens (whole
                turns only). Turns left dangling by an empty-turn cut belong to that cut.

The report (counts per reason, a few `file:line: reason: detail` examples, token totals) is
printed and saved as report.json / report.txt in the store directory.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from phi4_jax.data import chat, tokenizer
from phi4_jax.data.store import Manifest, write_store
from phi4_jax.posttrain import jsonl
from phi4_jax.posttrain.pairs import SFT_SCHEMA

log = logging.getLogger(__name__)
ROLES = ("system", "user", "assistant")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNT_QUESTIONS = ("Count up from {w}.", "Continue counting from {w}.",
                   "Count on from {w}, please.")


class Skip(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass
class SFTReport:
    inputs: list[str]
    max_tokens: int
    lines: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    truncated: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples: list[str] = dataclasses.field(default_factory=list)
    tokens: int = 0
    target_tokens: int = 0

    def note(self, where: str, reason: str, detail: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(f"{where}: {reason}: {detail}")

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "skipped": dict(self.skipped),
                "truncated": dict(self.truncated)}

    def text(self) -> str:
        lines = [f"SFT conversations from {', '.join(self.inputs)} (max_tokens {self.max_tokens})",
                 f"  lines {self.lines}, kept {self.kept} ({sum(self.truncated.values())} "
                 f"truncated), skipped {sum(self.skipped.values())}",
                 f"  tokens {self.tokens}, loss tokens {self.target_tokens}"]
        for title, counts in (("skipped", self.skipped), ("truncated", self.truncated)):
            lines += [f"  {title} {reason}: {n}" for reason, n in counts.most_common()]
        return "\n".join(lines + [f"  e.g. {e}" for e in self.examples])


def check(obj: Any) -> list[dict[str, str]]:
    """The conversation's messages, or `Skip` naming the reason."""
    if not isinstance(obj, dict):
        raise Skip("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    if "schema" in obj and obj["schema"] != SFT_SCHEMA:
        raise Skip("bad_schema", f"schema {obj['schema']!r:.60} is not {SFT_SCHEMA!r}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Skip("missing_messages", "messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise Skip("bad_message", f"messages[{i}] is a {type(m).__name__}, not an object")
        if m.get("role") not in ROLES:
            raise Skip("unknown_role", f"messages[{i}].role={m.get('role')!r:.40} not in {ROLES}")
        if not isinstance(m.get("content"), str):
            raise Skip("missing_content", f"messages[{i}].content is missing or not a string")
        if m["role"] == "system" and i:
            raise Skip("system_not_first", f"messages[{i}] is a system message")
    if not any(m["role"] == "assistant" for m in messages):
        raise Skip("no_assistant_turn", "no assistant message: nothing to train on")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def convert(obj: Any, *, max_tokens: int, encoding: Any = None
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids, loss mask, truncation reasons) of one conversation under the module's rules."""
    messages = check(obj)
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


def read_conversations(paths: Sequence[str], report: SFTReport, *, max_tokens: int,
                       encoding: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rendered (ids, mask) of every usable conversation; the rest is counted in `report`."""
    enc = encoding or tokenizer.phi4_encoding()
    seen: set[str] = set()
    t0 = time.perf_counter()
    for path in paths:
        for line_no, obj, error in jsonl.read_lines(path):
            report.lines += 1
            where = f"{path}:{line_no}"
            try:
                if error is not None:
                    raise Skip("invalid_json", error)
                key = obj.get("id") if isinstance(obj, dict) else None
                if isinstance(key, str) and key in seen:
                    raise Skip("duplicate_id", f"id {key!r} seen before")
                ids, mask, cuts = convert(obj, max_tokens=max_tokens, encoding=enc)
            except Skip as s:
                report.skipped[s.reason] += 1
                report.note(where, s.reason, str(s))
                continue
            if isinstance(key, str):
                seen.add(key)
            for reason in cuts:
                report.truncated[reason] += 1
                report.note(where, f"{reason} (truncated)", f"kept {len(ids)} tokens")
            report.kept += 1
            report.tokens += len(ids)
            report.target_tokens += int(mask.sum())
            if report.lines % 10_000 == 0:
                log.info("%s: %d lines, %d kept, %.0f lines/s", path, report.lines,
                         report.kept, report.lines / (time.perf_counter() - t0))
            yield ids, mask


def build_store(inputs: Sequence[str], output: str, *, max_tokens: int, source_name: str = "sft",
                encoding: Any = None) -> tuple[Manifest, SFTReport]:
    """Writes the store at `output` (with report.json / report.txt) and returns both."""
    report = SFTReport(inputs=[str(p) for p in inputs], max_tokens=max_tokens)
    masks: collections.deque = collections.deque()

    def documents():
        for ids, mask in read_conversations(inputs, report, max_tokens=max_tokens,
                                            encoding=encoding):
            masks.append(mask)
            yield ids

    def loss_masks():
        while True:
            yield masks.popleft()

    manifest = write_store(output, source_name, documents(), loss_masks=loss_masks(),
                           info={"kind": "sft", "max_tokens": max_tokens,
                                 "inputs": report.inputs})
    with open(os.path.join(output, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report.to_json(), f, indent=2)
    with open(os.path.join(output, "report.txt"), "w", encoding="utf-8") as f:
        f.write(report.text() + "\n")
    return manifest, report


def demo_conversations(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` learnable conversations for smoke runs: 1-2 turns of "count up from w" (a
    COUNT_QUESTIONS template, w a number word) answered with the next 3-6 number words, wrapping
    after nine; some open with a system message."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        messages = ([{"role": "system", "content": "You count in words."}]
                    if rng.random() < 0.3 else [])
        for _ in range(int(rng.integers(1, 3))):
            start = int(rng.integers(10))
            template = COUNT_QUESTIONS[int(rng.integers(len(COUNT_QUESTIONS)))]
            count = int(rng.integers(3, 7))
            messages += [{"role": "user", "content": template.format(w=NUMBER_WORDS[start])},
                         {"role": "assistant", "content": counting(start, count)}]
        out.append({"schema": SFT_SCHEMA, "id": f"demo/{k}", "source": "demo",
                    "messages": messages, "meta": {}})
    return out


def counting(start: int, count: int) -> str:
    """"three four five" for (3, 3): number words from `start`, wrapping after nine."""
    return " ".join(NUMBER_WORDS[(start + j) % 10] for j in range(count))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", action="append", default=[], help="conversations JSONL")
    parser.add_argument("--output", required=True, help="the store directory to write")
    parser.add_argument("--max_tokens", type=int, default=16384,
                        help="longest conversation kept (the SFT data.seq_len)")
    parser.add_argument("--source_name", default="sft")
    parser.add_argument("--demo", type=int, default=0,
                        help="also write and read N demo conversations (smoke runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    inputs = list(args.input)
    if args.demo:
        os.makedirs(args.output, exist_ok=True)
        path = os.path.join(args.output, "demo_conversations.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(c) + "\n" for c in demo_conversations(args.demo))
        inputs.append(path)
    if not inputs:
        parser.error("give --input FILE (repeatable) or --demo N")
    manifest, report = build_store(inputs, args.output, max_tokens=args.max_tokens,
                                   source_name=args.source_name)
    print(report.text())
    print(f"{args.output}: {manifest.num_documents} conversations, {manifest.num_tokens} tokens")
    return 0 if report.kept else 1


if __name__ == "__main__":
    sys.exit(main())
