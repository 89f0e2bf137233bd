"""Judge-guided DPO pairs from the command line, against OpenAI-compatible servers.

    python -m phi4_jax.posttrain.judge --input prompts.jsonl --output workdirs/judge \\
        --base_url https://api.openai.com/v1 --model gpt-4o --api_key_env OPENAI_API_KEY \\
        --reply_models gpt-4o,gpt-4o-mini --num_samples 2 --by accuracy

Input: one JSON object per line, {"id": str, "prompt": str, "reference"?: str, "replies"?:
[str | {"text": str, "source"?: str}]}. A prompt's candidates are its given replies (taken as
complete) plus `--num_samples` replies sampled from each of `--reply_models` (on
`--reply_base_url`, default the judge's server); a prompt needs two. Every candidate is judged
(`phi4_jax.posttrain.judge.backends.judge_all`) and pairs are built any-vs-any
(`phi4_jax.posttrain.judge.pairs.build_pairs`) in Phi-4 ChatML token ids.

Writes to --output: `pairs.jsonl` (phi4_jax.pair/v1, source "judge": what
experiments/phi4_dpo_judge.py reads from workdirs/judge/pairs.jsonl), `judgements.jsonl` (per
prompt: every candidate's source, text and judgement or null), `report.json` / `report.txt`
(counts, and bad input by reason: malformed prompts, failed replies, failed judgements). Each
file is written whole, atomically, at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from phi4_jax import cli
from phi4_jax.io import BadInputReport
from phi4_jax.io.jsonl import read_objects
from phi4_jax.posttrain import remote
from phi4_jax.posttrain.judge.backends import JUDGE_REASONS, OpenAIBackend, judge_all
from phi4_jax.posttrain.judge.pairs import Candidate, JudgeItem, PairStats, build_pairs
from phi4_jax.posttrain.records import write_records, write_report

REASONS = JUDGE_REASONS | {
    "malformed_json": "a prompts line is not JSON (syntax, nesting depth, number range)",
    "invalid_utf8": "a prompts line is not UTF-8, or holds a lone surrogate",
    "oversized": "a prompts line over the line bound, or judge replies over MAX_REPLY_CHARS",
    "corrupt_compressed_stream": "the prompts file is a truncated or corrupt gzip/zstd stream",
    "not_an_object": "a prompts line is not a JSON object",
    "missing_field": "id or prompt absent or not a non-empty string",
    "bad_field": "reference or replies of the wrong type",
    "duplicate_id": "a prompt id seen before",
    "reply_failed": "a reply model did not answer (its replies are missing)",
    "too_few_replies": "fewer than two candidates: nothing to compare",
}

PROG = "python -m phi4_jax.posttrain.judge"
_DOC = __doc__.split("\n\n")


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    id: str
    prompt: str
    reference: str | None
    replies: tuple[tuple[str, str], ...]  # (text, source), taken as complete


def read_prompts(path: str, report: BadInputReport) -> list[PromptSpec]:
    """The valid prompts of a JSONL file; bad lines are counted in `report`, never raised."""
    out, seen = [], set()
    for line_no, obj, error in read_objects(path):
        where = f"{path}:{line_no}"
        if error:
            report.bad(path, error.reason, where, error)
            continue
        if not all(isinstance(obj.get(k), str) and obj[k].strip() for k in ("id", "prompt")):
            report.bad(path, "missing_field", where, "id and prompt must be non-empty strings")
            continue
        replies, problem = [], None
        raw = obj.get("replies", [])
        if not isinstance(raw, list):
            problem = "replies must be a list"
        for k, r in enumerate(raw if problem is None else []):
            text = r if isinstance(r, str) else r.get("text") if isinstance(r, dict) else None
            if not isinstance(text, str) or not text.strip():
                problem = f"replies[{k}] must be a non-empty string or {{'text': str}}"
                break
            replies.append((text, str(r.get("source", "given")) if isinstance(r, dict)
                            else "given"))
        if obj.get("reference") is not None and not isinstance(obj["reference"], str):
            problem = "reference must be a string"
        if problem:
            report.bad(path, "bad_field", where, problem)
        elif obj["id"] in seen:
            report.bad(path, "duplicate_id", where, f"id {obj['id']!r} seen before")
        else:
            seen.add(obj["id"])
            out.append(PromptSpec(obj["id"], obj["prompt"], obj.get("reference"),
                                  tuple(replies)))
    return out


def sample_replies(specs: Sequence[PromptSpec], models: Sequence[remote.ChatModel],
                   messages: Sequence[list[dict[str, str]]], args: argparse.Namespace,
                   report: BadInputReport) -> list[list[tuple[remote.Reply, str]]]:
    """`--num_samples` replies of every reply model to every prompt (thread pool)."""
    out: list[list[tuple[remote.Reply, str]]] = [[] for _ in specs]

    def one(job: tuple[int, int]) -> list[remote.Reply]:
        return models[job[1]].sample(messages[job[0]], args.num_samples,
                                     temperature=args.reply_temperature,
                                     max_tokens=args.reply_max_tokens)

    jobs = [(i, m) for i in range(len(specs)) for m in range(len(models))]
    with ThreadPoolExecutor(max_workers=args.max_workers) as pool:
        for (i, m), fut in [(job, pool.submit(one, job)) for job in jobs]:
            try:
                out[i] += [(r, models[m].name) for r in fut.result()]
            except remote.ServerError as e:
                report.bad(args.input, "reply_failed", f"{specs[i].id} {models[m].name}", str(e))
    return out


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
    remote.add_request_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = remote.start_command(build_parser(), argv, PROG)
    text = remote.Phi4Text(args.tokenizer_name)
    report = BadInputReport(REASONS)
    specs = read_prompts(args.input, report)
    system = [{"role": "system", "content": args.system}] if args.system else []
    messages = [system + [{"role": "user", "content": s.prompt}] for s in specs]
    models = [remote.ChatModel.connect(m.strip(), base_url=args.reply_base_url or args.base_url,
                                       api_key_env=args.reply_api_key_env or args.api_key_env,
                                       max_retries=args.max_retries, timeout=args.timeout)
              for m in args.reply_models.split(",") if m.strip()]
    sampled = sample_replies(specs, models, messages, args, report)
    items = []
    for spec, msgs, extra in zip(specs, messages, sampled):
        candidates = [Candidate(t, text.reply_ids(remote.Reply(t, True)), src)
                      for t, src in spec.replies]
        candidates += [Candidate(r.text, text.reply_ids(r), src) for r, src in extra]
        if len(candidates) < 2:
            report.bad(args.input, "too_few_replies", spec.id, f"{len(candidates)} candidates")
            continue
        report.ok(args.input)
        items.append(JudgeItem(spec.id, spec.prompt, tuple(text.render(msgs)),
                               tuple(candidates), spec.reference))
    backend = OpenAIBackend(args.model, base_url=args.base_url,
                            api_key=remote.api_key(args.api_key_env), max_retries=args.max_retries,
                            timeout=args.timeout, max_tokens=args.judge_max_tokens,
                            json_mode=args.json_mode)
    judgements, report = judge_all(backend, items, attempts=args.attempts,
                                   max_workers=args.max_workers, progress=not args.quiet,
                                   report=report)
    stats = {by: PairStats() for by in (("accuracy", "overall") if args.by == "both"
                                        else (args.by,))}
    pairs = [p for item, js in zip(items, judgements) for by, st in stats.items()
             for p in build_pairs(item, js, tokenizer=text.tokenizer_name, by=by,
                                  min_margin=args.min_margin, judge_name=args.model, stats=st)]
    write_records(os.path.join(args.output, "pairs.jsonl"), pairs)
    write_records(os.path.join(args.output, "judgements.jsonl"), [_judged(i, js)
                                                                   for i, js in zip(items,
                                                                                    judgements)])
    counts: dict[str, Any] = {"prompts": len(items), "candidates": sum(
        len(i.candidates) for i in items), "pairs": len(pairs)}
    counts |= {f"{k}_{by}": v for by, st in stats.items()
               for k, v in dataclasses.asdict(st).items()}
    print(write_report(args.output, counts, report, "judge"))
    print(f"{len(pairs)} pairs -> {os.path.join(args.output, 'pairs.jsonl')}")
    return 0 if pairs else 1


def _judged(item: JudgeItem, judgements: Sequence[Any]) -> dict[str, Any]:
    return {"id": item.id, "prompt": item.prompt, "candidates": [
        {"source": c.source, "text": c.text, "judgement": j.to_json() if j else None}
        for c, j in zip(item.candidates, judgements)]}
