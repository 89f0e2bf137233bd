"""Pivotal Token Search from the command line: resumable, with a progress bar.

    python -m phi4_jax.posttrain.pts --out runs/pts_arith \\
        --arithmetic "4*12,7*9,3*7,40+32" --n_samples 16 --p_gap 0.2 --max_new_tokens 6

(`python -m phi4_jax.posttrain.pts_cli` is the same command; the hyphenated flag spellings
of earlier releases, e.g. `--n-samples`, still work.)
Runs as a `phi4_jax.synth` workflow (`pts.workflow`: one stage, `search`, over shards of
--shard_size questions). Writes to --out: `pivots.jsonl` and `pairs.jsonl` (schemas in
`phi4_jax.posttrain.records`), `config.json`, and the engine's files (`source/`,
`stages/search/` with per-question results, rejects, markers and report.txt, `manifest.json`).
A rerun, after a kill -9 at any point, skips finished shards and writes the same bytes as an
uninterrupted run; it refuses to continue under a different search configuration. Before
searching it prints the false-pivot probability for the configured N and p_gap.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import time
from collections.abc import Sequence

from phi4_jax import cli, runs
from phi4_jax.io.jsonl import read_objects
from phi4_jax.posttrain.pts.oracles import ORACLES, Oracle, Question, oracle_for
from phi4_jax.posttrain.pts.search import Problem, PTSConfig, false_pivot_probability
from phi4_jax.posttrain.pts.workflow import (
    STAGE,
    OutputDirError,
    check_output_dir,
    results,
    run_search,
    search_config,
)
from phi4_jax.posttrain.records import parse_pair, parse_pivot, write_records
from phi4_jax.posttrain.sampler import Sampler

_ARITH = re.compile(r"^\s*(\d+)\s*([+*-])\s*(\d+)\s*$")


def arithmetic_questions(spec: str) -> list[Question]:
    """Questions from "a+b,c*d,...": "What is a + b?" with the reply forced to start "a + b =".

    Forcing the reply's start keeps rollouts a few tokens long (the answer digits), which is
    what makes a real-model search affordable on a CPU."""
    out = []
    for item in spec.split(","):
        m = _ARITH.match(item)
        if not m:
            raise ValueError(f"--arithmetic: {item!r} is not 'a+b', 'a-b' or 'a*b'")
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        out.append(Question(id=f"arith/{a}{op}{b}", prompt=f"What is {a} {op} {b}?",
                            answer=str(value), kind="math", reply_prefix=f"{a} {op} {b} ="))
    return out


def load_questions(path: str) -> tuple[list[Question], list[str]]:
    """Questions from JSONL (Question's fields; `choices` a list of strings); malformed lines
    (any parse failure of `phi4_jax.io.jsonl`, or a field of the wrong type) are reported as
    `path:line: problem`, not fatal."""
    fields = {f.name for f in dataclasses.fields(Question)}
    questions, problems, seen = [], [], set()
    for line_no, obj, error in read_objects(path):
        try:
            if error:
                raise ValueError(error)
            unknown = set(obj) - fields
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}")
            if "choices" in obj:  # a string would be split into letters: require a list
                if not isinstance(obj["choices"], list) or not all(
                        isinstance(c, str) for c in obj["choices"]):
                    raise ValueError(f"choices must be a list of strings, got "
                                     f"{type(obj['choices']).__name__}")
                obj["choices"] = tuple(obj["choices"])
            if not isinstance(obj.get("meta", {}), dict):
                raise ValueError("meta must be an object")
            q = Question(**obj)
            if not isinstance(q.id, str) or not q.id or q.id in seen:
                raise ValueError(f"id {q.id!r} is empty, not a string or a duplicate")
            if not isinstance(q.prompt, str) or not q.prompt.strip():
                raise ValueError("prompt must be a non-empty string")
            for name in ("answer", "kind", "tests", "context", "reply_prefix"):
                if not isinstance(getattr(q, name), str):
                    raise ValueError(f"{name} must be a string")
            if q.kind not in ORACLES:
                raise ValueError(f"kind {q.kind!r} is not one of {sorted(ORACLES)}")
            if not isinstance(q.entry_point, str | None):
                raise ValueError("entry_point must be a string")
        except (ValueError, TypeError) as e:
            problems.append(f"{path}:{line_no}: {e}")
            continue
        seen.add(q.id)
        questions.append(q)
    return questions, problems


def build_problems(questions: Sequence[Question], sampler: Sampler,
                   system: str | None = None) -> list[Problem]:
    """Chat prompt (+ forced reply prefix) token ids for each question."""
    out = []
    for q in questions:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": q.prompt}]
        chat = list(sampler.render(messages))
        forced = sampler.encode(q.reply_prefix) if q.reply_prefix else []
        out.append(Problem(q, tuple(chat + forced), len(chat)))
    return out


@dataclasses.dataclass
class RunSummary:
    """This run's work (a resumed run counts only what it searched)."""

    questions: int = 0
    skipped: int = 0          # in shards an earlier run finished (resumed)
    searched: int = 0
    pivots: int = 0
    pairs: int = 0
    oracle_calls: int = 0
    rejected: int = 0         # questions in the search stage's rejects (all runs)
    seconds: float = 0.0


def run(problems: Sequence[Problem], sampler: Sampler, oracle: Oracle, config: PTSConfig,
        out_dir: str, *, batch_questions: int = 4, shard_size: int = 16,
        progress: bool = True) -> RunSummary:
    """Searches every problem whose shard is not done yet (the `phi4_jax.synth` workflow of
    `pts.workflow`), then writes OUT/pivots.jsonl and OUT/pairs.jsonl whole from the shards."""
    start = time.time()
    result, searcher = run_search(problems, sampler, oracle, config, out_dir,
                                  batch_questions=batch_questions, shard_size=shard_size,
                                  progress=progress)
    rows = list(results(out_dir))  # in the documented line format (records.py), validated:
    write_records(os.path.join(out_dir, "pivots.jsonl"),
                  [parse_pivot(p) for r in rows for p in r["pivots"]])
    write_records(os.path.join(out_dir, "pairs.jsonl"),
                  [parse_pair(p) for r in rows for p in r["pairs"]])
    return RunSummary(questions=len(problems),
                      skipped=len(problems) - result.stats[STAGE]["records_processed"],
                      searched=searcher.searched, pivots=searcher.pivots, pairs=searcher.pairs,
                      oracle_calls=searcher.stats.oracle_calls,
                      rejected=result.manifest["stages"][STAGE]["rejects"],
                      seconds=time.time() - start)


def false_pivot_report(n: int, p_gap: float) -> str:
    """The lines the CLI prints: spurious-pivot and detection probabilities for N, p_gap."""
    lines = [f"false-pivot probability with N={n}, p_gap={p_gap} (true delta 0; "
             "exact binomial):"]
    for p in (0.2, 0.5, 0.8):
        lines.append(f"  p={p:.1f}: {false_pivot_probability(n, p_gap, p):.4f}")
    lines.append(f"  detection of a true 0.5 -> {min(1.0, 0.5 + 2 * p_gap):.1f} jump: "
                 f"{false_pivot_probability(n, p_gap, 0.5, min(1.0, 0.5 + 2 * p_gap)):.4f}")
    return "\n".join(lines)


PROG = "python -m phi4_jax.posttrain.pts"
EXAMPLE = __doc__.split("\n\n")[1].strip()


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The runner's flags; the hyphenated spellings of earlier releases stay as aliases."""
    ap = cli.parser(prog, __doc__.split("\n\n")[0], example=EXAMPLE)
    ap.add_argument("--out", required=True, help="output directory (resumable)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--arithmetic", help='comma-separated "a+b" / "a*b" questions')
    src.add_argument("--questions", help="JSONL file of questions (Question fields)")
    ap.add_argument("--model", default=None, help="GGUF file (None: SmolLM2-135M-Instruct)")
    ap.add_argument("--system", default="You are a calculator.", help="system message ('' none)")
    ap.add_argument(*cli.flag_names("n_samples"), type=int, default=16,
                    help="rollouts per prefix estimate")
    ap.add_argument(*cli.flag_names("p_gap"), type=float, default=0.2,
                    help="|delta p| that makes a token pivotal")
    ap.add_argument(*cli.flag_names("p_min"), type=float, default=0.2,
                    help="questions with p(Q) below are not searched")
    ap.add_argument(*cli.flag_names("p_max"), type=float, default=0.8,
                    help="questions with p(Q) above are not searched")
    ap.add_argument("--split", choices=("logprob", "token"), default="logprob",
                    help="segment split: cumulative log-prob midpoint, or token midpoint")
    ap.add_argument("--solutions", type=int, default=2, help="solutions searched per question")
    ap.add_argument(*cli.flag_names("max_new_tokens"), type=int, default=64,
                    help="rollout length cap")
    ap.add_argument("--temperature", type=float, default=1.0, help="rollout sampling")
    ap.add_argument(*cli.flag_names("top_p"), type=float, default=1.0, help="rollout sampling")
    ap.add_argument(*cli.flag_names("stop_newline"), action="store_true",
                    help="also stop rollouts at newline")
    ap.add_argument(*cli.flag_names("batch_questions"), type=int, default=4,
                    help="questions searched together")
    ap.add_argument(*cli.flag_names("batch_rows"), type=int, default=64,
                    help="rows per generate call")
    ap.add_argument("--seed", type=int, default=0, help="rollout sampling seed")
    ap.add_argument("--shard_size", type=int, default=16,
                    help="questions per shard: the unit a killed run redoes")
    return ap


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> RunSummary:
    """Runs the search the flags describe; a bad flag or question file is a `cli.UsageError`."""
    args = build_parser(prog).parse_args(argv)
    if args.questions and not os.path.isfile(args.questions):
        raise cli.UsageError(f"--questions {args.questions}: " + (
            "not a regular file" if os.path.exists(args.questions) else "no such file"))
    if args.shard_size < 1:
        raise cli.UsageError(f"--shard_size {args.shard_size}: must be >= 1")
    config = PTSConfig(n_samples=args.n_samples, p_gap=args.p_gap, p_min=args.p_min,
                       p_max=args.p_max, split=args.split, solutions_per_question=args.solutions)
    print(false_pivot_report(config.n_samples, config.p_gap), flush=True)
    if args.arithmetic:
        with cli.user_errors_from(ValueError):
            questions = arithmetic_questions(args.arithmetic)
    else:
        questions, bad = load_questions(args.questions)
        for msg in bad[:10]:
            print(f"skipped malformed question: {msg}")
        print(f"{len(questions)} questions, {len(bad)} malformed lines skipped")
    kinds = {q.kind for q in questions}
    if len(kinds) > 1:
        raise cli.UsageError(f"one oracle kind per run, got {sorted(kinds)}")
    import phi4_jax
    from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path
    from phi4_jax.inference.sampling import SamplingConfig
    from phi4_jax.posttrain.sampler import ModelSampler

    path = args.model or smollm2_path()
    runs.write_job_record(args.out, job=prog, argv=argv, config=vars(args),
                          inputs=[args.questions, path])
    tokenizer = GGUFTokenizer(path)
    stops = [tokenizer.eos_id]
    if args.stop_newline:  # "\n" and "\n\n" are distinct tokens in byte-level BPE vocabularies
        stops += [ids[0] for ids in map(tokenizer.encode, ("\n", "\n\n")) if len(ids) == 1]
    sampler = ModelSampler(
        None, tokenizer,
        max_new_tokens=args.max_new_tokens, stop_tokens=stops, batch_rows=args.batch_rows,
        sampling=SamplingConfig(temperature=args.temperature, top_p=args.top_p),
        seed=args.seed, tokenizer_name=os.path.basename(path))
    with cli.user_errors_from(OutputDirError):  # refused before the model is loaded
        check_output_dir(args.out, search_config(config, sampler))
    sampler.model = phi4_jax.load_gguf(path, dtype="float32")
    problems = build_problems(questions, sampler, args.system or None)
    with cli.user_errors_from(OutputDirError):
        summary = run(problems, sampler, oracle_for(kinds.pop() if kinds else "math"), config,
                      args.out, batch_questions=args.batch_questions,
                      shard_size=args.shard_size)
    with open(os.path.join(args.out, "stages", STAGE, "report.txt"), encoding="utf-8") as f:
        print(f.read(), end="")
    print(f"done: {summary}")
    return summary
