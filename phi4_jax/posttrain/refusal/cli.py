"""Hallucination-refusal SFT examples and DPO pairs from the command line.

    python -m phi4_jax.posttrain.refusal --input trivia.jsonl --output workdirs/refusal \\
        --base_url http://localhost:8000/v1 --model phi-4-sft --num_samples 8 \\
        --teacher_model gpt-4o --teacher_base_url https://api.openai.com/v1 \\
        --teacher_api_key_env OPENAI_API_KEY

Input: trivia seeds, one JSON object per line, {"id", "question", "answer", "aliases"?}. The
policy (--model on --base_url, an OpenAI-compatible server) answers each question
--num_samples times; its accuracy decides what is kept (phi4_jax.posttrain.refusal.data). The
teacher is --teacher_model (on --teacher_base_url, default --base_url), or without it the
offline template teacher. Token ids are Phi-4 ChatML (the prompt rendered, each reply's text
encoded, with <|im_end|> when the reply ended).

Writes to --output: `pairs.jsonl` (phi4_jax.pair/v1, source "refusal", completions cut to
--truncate tokens: what experiments/phi4_dpo_pts.py and phi4_dpo_judge.py read from
workdirs/refusal/pairs.jsonl), `sft.jsonl` (phi4_jax.sft/v1: an input of
`python -m phi4_jax.data.sft`), `estimates.jsonl` (per seed: accuracy and graded replies) and
`report.json` / `report.txt` (counts, and bad input by reason: malformed seeds, failed policy
or teacher requests). The job is a workflow on the data-workflow engine, estimates -> texts ->
data (`phi4_jax.posttrain.refusal.workflow`, docs/synth.md): its requests are cached and its
shards, markers and rejects kept in OUTPUT/workflow/, so rerunning the same command resumes a
killed run and a finished one asks nothing; the files above are written whole from the shards,
the same bytes whether or not the run was killed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from phi4_jax import cli
from phi4_jax.posttrain import remote
from phi4_jax.posttrain.records import write_report
from phi4_jax.posttrain.refusal.data import REASONS, RefusalConfig
from phi4_jax.posttrain.refusal.seeds import SEED_REASONS
from phi4_jax.posttrain.refusal.workflow import build_workflow, export
from phi4_jax.synth.runner import REJECT_REASONS
from phi4_jax.synth.shards import SOURCE_REASONS

PROG = "python -m phi4_jax.posttrain.refusal"
_DOC = __doc__.split("\n\n")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(PROG, "\n\n".join(_DOC[:1] + _DOC[2:]), example=_DOC[1].strip())
    parser.add_argument("--input", required=True, help="trivia seeds JSONL")
    parser.add_argument("--output", required=True, help="directory for pairs.jsonl, sft.jsonl")
    remote.add_server_flags(parser, what="the policy")
    parser.add_argument("--num_samples", type=int, default=RefusalConfig.samples,
                        help="policy replies per question (the accuracy estimate)")
    parser.add_argument("--temperature", type=float, default=1.0, help="policy sampling")
    parser.add_argument("--max_tokens", type=int, default=256, help="per policy reply")
    parser.add_argument("--teacher_model", default="",
                        help="teacher model on the teacher's server ('': template teacher)")
    remote.add_server_flags(parser, "teacher_", what="the teacher", model=False)
    parser.add_argument("--teacher_temperature", type=float, default=0.7,
                        help="teacher sampling temperature")
    parser.add_argument("--teacher_attempts", type=int, default=2,
                        help="tries per teacher text (failed or empty)")
    parser.add_argument("--usually", type=float, default=RefusalConfig.usually,
                        help="accuracy from which the SFT example answers instead of refusing")
    parser.add_argument("--truncate", type=int, default=RefusalConfig.truncate,
                        help="tokens kept of each pair completion")
    remote.add_request_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = remote.start_command(build_parser(), argv, PROG)
    result = remote.run_job(build_workflow(args), args, beam_args)
    reasons = REJECT_REASONS | SOURCE_REASONS | SEED_REASONS | REASONS
    counts, report, pairs, sft = export(result, args, reasons)
    print(write_report(args.output, counts, report, "refusal"))
    print(f"{pairs} pairs -> {os.path.join(args.output, 'pairs.jsonl')}, "
          f"{sft} SFT examples -> {os.path.join(args.output, 'sft.jsonl')}")
    return 0 if pairs or sft else 1
