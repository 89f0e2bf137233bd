"""Learnable demo data for smoke runs of the SFT -> DPO chain: counting in number words.

    python -m phi4_jax.posttrain.demo sft --num_conversations 400 --max_tokens 128 \\
        --output workdirs/phi4_sft_smoke_data/sft        # conversations + their token store
    python -m phi4_jax.posttrain.demo pairs --output workdirs/phi4_dpo_smoke_data

The task: a `COUNT_QUESTIONS` template asks to count up from a number word (`NUMBER_WORDS`);
the answer is the next words (`counting`), wrapping after nine. `demo_conversations` are SFT
records of it, `demo_pairs` PTS-shaped single-token DPO pairs (chosen: the next word).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from phi4_jax import cli
from phi4_jax.data.sft import SFT_SCHEMA
from phi4_jax.posttrain.records import JsonlWriter, Pair

PROG = "python -m phi4_jax.posttrain.demo"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNT_QUESTIONS = ("Count up from {w}.", "Continue counting from {w}.",
                   "Count on from {w}, please.")


def counting(start: int, count: int) -> str:
    """"three four five" for (3, 3): number words from `start`, wrapping after nine."""
    return " ".join(NUMBER_WORDS[(start + j) % 10] for j in range(count))


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


def write_conversations(directory: str, n: int, seed: int = 0) -> str:
    """Writes `demo_conversations(n, seed)` to DIRECTORY/demo_conversations.jsonl; its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "demo_conversations.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(c) + "\n" for c in demo_conversations(n, seed))
    return path


def demo_pairs(seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) PTS-shaped single-token pairs with a learnable rule, in Phi-4 ChatML
    ids: the prompt is a "count up from w" question (a COUNT_QUESTIONS template) plus the first
    1-4 words of the reply, chosen is the next number word, rejected two other number words.
    Held out: the (template, start, length) prompts with (template + start + length) % 4 == 0,
    never trained on (the rule, "the word after the last one", still applies to them)."""
    from phi4_jax.data import chat, tokenizer

    enc = tokenizer.phi4_encoding()
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for t, template in enumerate(COUNT_QUESTIONS):
        for start in range(10):
            messages = [{"role": "user", "content": template.format(w=NUMBER_WORDS[start])}]
            header = chat.render(messages, encoding=enc, add_generation_prompt=True)[0]
            for length in range(1, 5):
                prompt = (*map(int, header), *enc.encode_ordinary(counting(start, length)))
                good = (start + length) % 10
                for wrong in rng.choice([w for w in range(10) if w != good], 2, replace=False):
                    pair = Pair(f"demo/t{t}/s{start}/n{length}/r{wrong}", prompt,
                                tuple(enc.encode_ordinary(" " + NUMBER_WORDS[good])),
                                tuple(enc.encode_ordinary(" " + NUMBER_WORDS[wrong])), "pts",
                                "phi4", {"rule": "chosen = the next number word"})
                    (held_out if (t + start + length) % 4 == 0 else train).append(pair)
    return train, held_out


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.parser(PROG, __doc__.split("\n\n")[0],
                        example=__doc__.split("\n\n")[1].strip())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=cli.Parser)
    sft = sub.add_parser("sft", help="demo conversations and their SFT token store")
    sft.add_argument("--output", required=True, help="the store directory to write")
    sft.add_argument("--num_conversations", type=int, default=400, help="how many")
    sft.add_argument("--max_tokens", type=int, default=128, help="longest conversation kept")
    sft.add_argument("--seed", type=int, default=0, help="generator seed")
    pairs = sub.add_parser("pairs", help="demo DPO pairs: OUTPUT/train.jsonl, held_out.jsonl")
    pairs.add_argument("--output", "--out", required=True, help="directory to write")
    pairs.add_argument("--seed", type=int, default=0, help="generator seed")
    args = parser.parse_args(argv)
    if args.command == "pairs":
        for name, records in zip(("train", "held_out"), demo_pairs(args.seed)):
            with JsonlWriter(os.path.join(args.output, f"{name}.jsonl"), append=False) as w:
                print(f"{w.write(records)} pairs -> {w.path}")
        return 0
    from phi4_jax.data import sft as sft_data

    path = write_conversations(args.output, args.num_conversations, args.seed)
    manifest, stats = sft_data.build_store([path], args.output, max_tokens=args.max_tokens)
    print(stats.text())
    print(f"{args.output}: {manifest.num_documents} conversations, {manifest.num_tokens} tokens")
    return 0 if stats.kept else 1


if __name__ == "__main__":
    cli.run(main, prog=PROG)
