"""Judge-guided DPO pairs from the command line, against OpenAI-compatible servers.

    python -m phi4_jax.posttrain.judge --input prompts.jsonl --output workdirs/judge \\
        --base_url https://api.openai.com/v1 --model gpt-4o --api_key_env OPENAI_API_KEY \\
        --reply_models gpt-4o,gpt-4o-mini --num_samples 2 --by accuracy

Input: one JSON object per line, {"id": str, "prompt": str, "reference"?: str, "replies"?:
[str | {"text": str, "source"?: str}]}. A prompt's candidates are its given replies (taken as
complete) plus `--num_samples` replies sampled from each of `--reply_models` (on
`--reply_base_url`, default the judge's server); a prompt needs two. Every candidate is judged
and pairs are built any-vs-any (`phi4_jax.posttrain.judge.pairs.build_pairs`) in Phi-4 ChatML
token ids: a workflow on the data-workflow engine, replies -> judged -> pairs
(`phi4_jax.posttrain.judge.workflow`, docs/synth.md), whose requests are cached and whose
shards, markers and rejects are kept in OUTPUT/workflow/. Rerunning the same command resumes a
killed run (nothing asked twice) and makes no request when the run had finished.

Writes to --output: `pairs.jsonl` (phi4_jax.pair/v1, source "judge": what
experiments/phi4_dpo_judge.py reads from workdirs/judge/pairs.jsonl), `judgements.jsonl` (per
prompt: every candidate's source, text and judgement or null), `report.json` / `report.txt`
(counts, and bad input by reason: malformed prompts, failed replies, failed judgements), each
written whole from the engine's shards: the same bytes whether or not the run was killed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from phi4_jax import cli
from phi4_jax.posttrain import remote
from phi4_jax.posttrain.judge.judgement import JUDGE_REASONS
from phi4_jax.posttrain.judge.workflow import PROMPT_REASONS, build_workflow, by_scores, export
from phi4_jax.posttrain.records import write_report
from phi4_jax.synth.runner import REJECT_REASONS
from phi4_jax.synth.shards import SOURCE_REASONS

REASONS = REJECT_REASONS | SOURCE_REASONS | JUDGE_REASONS | PROMPT_REASONS

PROG = "python -m phi4_jax.posttrain.judge"
_DOC = __doc__.split("\n\n")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser(PROG, "\n\n".join(_DOC[:1] + _DOC[2:]), example=_DOC[1].strip())
    parser.add_argument("--input", required=True, help="prompts JSONL (see the module docs)")
    parser.add_argument("--output", required=True, help="directory for pairs.jsonl and reports")
    remote.add_server_flags(parser, what="the judge")
    remote.add_server_flags(parser, "reply_", what="the reply models", model=False)
    parser.add_argument("--reply_models", default="",
                        help="comma-separated models that write candidate replies ('' none)")
    parser.add_argument("--num_samples", type=int, default=1,
                        help="replies sampled per reply model and prompt")
    parser.add_argument("--reply_temperature", type=float, default=0.7,
                        help="reply sampling temperature")
    parser.add_argument("--reply_max_tokens", type=int, default=2048,
                        help="longest sampled reply (a cut reply gets no end-of-turn id)")
    parser.add_argument("--system", default="", help="system message of the prompts ('' none)")
    parser.add_argument("--by", choices=("accuracy", "overall", "both"), default="accuracy",
                        help="the score pairs are ranked by (both: one pair set of each)")
    parser.add_argument("--min_margin", type=float, default=1e-6,
                        help="smallest score difference that makes a pair")
    parser.add_argument("--attempts", type=int, default=3, help="judge attempts per reply")
    parser.add_argument("--judge_max_tokens", type=int, default=1024,
                        help="longest judge reply")
    parser.add_argument("--json_mode", action="store_true",
                        help="ask the judge server for response_format json_object")
    parser.add_argument("--judge_prefill", default="",
                        help="text the judge's reply starts with, e.g. '{\"faults\": [], "
                        "\"scores\": {\"accuracy\": ' for a small judge that does not write "
                        "the JSON on its own (sent as a final assistant message with vLLM's "
                        "continue_final_message; phi4_jax.serve and vLLM accept it)")
    parser.add_argument("--judge_temperature", type=float, default=0.0,
                        help="judge sampling temperature")
    remote.add_request_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = remote.start_command(build_parser(), argv, PROG)
    result = remote.run_job(build_workflow(args), args, beam_args)
    counts, report, n = export(result, args.output, args.input, REASONS, by_scores(args.by))
    print(write_report(args.output, counts, report, "judge"))
    print(f"{n} pairs -> {os.path.join(args.output, 'pairs.jsonl')}")
    return 0 if n else 1
