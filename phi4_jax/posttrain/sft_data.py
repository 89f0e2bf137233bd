"""`python -m phi4_jax.posttrain.sft_data`, kept working: the SFT store builder now lives in
`phi4_jax.data.sft` and the demo conversations in `phi4_jax.posttrain.demo`.

    python -m phi4_jax.posttrain.sft_data --input convs.jsonl --output STORES/sft
    python -m phi4_jax.posttrain.sft_data --demo 400 --output STORES/sft --max_tokens 128
"""

from __future__ import annotations

from collections.abc import Sequence

from phi4_jax.data.sft import SFTStats, build_store, check, convert, read_conversations
from phi4_jax.posttrain.demo import COUNT_QUESTIONS, NUMBER_WORDS, counting, demo_conversations

PROG = "python -m phi4_jax.posttrain.sft_data"
__all__ = ["COUNT_QUESTIONS", "NUMBER_WORDS", "SFTStats", "build_store", "check", "convert",
           "counting", "demo_conversations", "main", "read_conversations"]


def main(argv: Sequence[str] | None = None) -> int:
    """`phi4_jax.data.sft`'s command line plus --demo N (N demo conversations as an input)."""
    from phi4_jax.data import sft
    from phi4_jax.posttrain import demo

    parser = sft.build_parser(prog=PROG)
    parser.add_argument("--demo", type=int, default=0,
                        help="also write and read N demo conversations (smoke runs)")
    args = parser.parse_args(argv)
    inputs = list(args.input)
    if args.demo:
        inputs.append(demo.write_conversations(args.output, args.demo))
    if not inputs:
        parser.error("give --input FILE (repeatable) or --demo N")
    return sft.run(args, inputs)


if __name__ == "__main__":
    from phi4_jax import cli

    cli.run(main, prog=PROG)
