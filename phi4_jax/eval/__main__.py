"""Evaluate a model on benchmark tasks; write DIR/results.json and DIR/samples/TASK.jsonl.

PATH is what `python -m phi4_jax.serve` takes (GGUF file, Hugging Face directory, training
work dir); or --base_url names an OpenAI-compatible server (vLLM, this project's server) and
--served_model the model there. Tasks (comma-separated):

  mc:PATH.jsonl        multiple choice by log-likelihood ({"question", "choices", "answer"})
  bigbench:PATH        a BIG-bench task.json (multiple-choice target_scores)
  humaneval[:PATH]     code pass@k in the sandbox (--n_samples, --pass_k, --temperature)
  champ[:PATH]         competition math, answers checked by math-verify
  simpleqa:PATH.jsonl  correct / not attempted / incorrect (--grader_url for an LLM grader)
  ppl:PATH             perplexity and bits per byte (text file, .jsonl of {"text"}, token store)

Multiple-choice scores follow lm-eval-harness (docs/eval.md): continuation " " + choice, acc
by summed log-likelihood, acc_norm by log-likelihood per character of the choice.

--decontamination_report=PATH (OUTPUT.report.json of python -m phi4_jax.curate.decontaminate
over the training data) adds to each task in results.json whether the training data was
decontaminated against its benchmark and what matched (docs/eval.md).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from phi4_jax import cli

PROG = "python -m phi4_jax.eval"


def parse_args(argv: Sequence[str]):
    parser = cli.parser(PROG, __doc__, example=f"{PROG} --model=$(python -c 'from "
                        "phi4_jax.convert.gguf import smollm2_path; print(smollm2_path())') "
                        "--tasks=mc:questions.jsonl --output=eval_out --limit=100")
    parser.add_argument("--model", default=None, help="GGUF file, HF directory or work dir")
    parser.add_argument("--base_url", default=None,
                        help="an OpenAI-compatible server instead, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--served_model", default=None,
                        help="the model name at --base_url (default: the server's first)")
    parser.add_argument("--tasks", required=True, help="comma-separated task list (above)")
    parser.add_argument("--output", required=True, help="directory for results and samples")
    parser.add_argument("--limit", type=int, default=None, help="first N examples per task")
    parser.add_argument("--batch_size", type=int, default=32,
                        help="rows scored (or sequences sampled) together")
    parser.add_argument("--num_fewshot", type=int, default=0,
                        help="examples of the same task before each multiple-choice question")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a work dir")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="compute dtype (default: the checkpoint's; GGUF: float32)")
    parser.add_argument("--add_bos", action="store_true",
                        help="begin every context with the BOS token (lm-eval: the HF "
                        "tokenizer's own default)")
    parser.add_argument("--n_samples", type=int, default=1, help="code: samples per problem")
    parser.add_argument("--pass_k", default="1", help="code: comma-separated k of pass@k")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="code sampling temperature (use > 0 with --n_samples > 1)")
    parser.add_argument("--max_gen_tokens", type=int, default=512)
    parser.add_argument("--grader_url", default=None,
                        help="simpleqa: an OpenAI-compatible server for the LLM grader")
    parser.add_argument("--grader_model", default=None, help="simpleqa: the grader's model")
    parser.add_argument("--cache", default=None,
                        help="SQLite request cache for remote generation and grading")
    parser.add_argument("--decontamination_report", default=None,
                        help="a decontamination report (python -m phi4_jax.curate."
                        "decontaminate): each task's status goes into results.json")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write OUTPUT/tensorboard scalars")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(cli.strip_debug(argv))
    if (args.model is None) == (args.base_url is None):
        raise cli.UsageError("give exactly one of --model=PATH and --base_url=URL")
    for name in ("batch_size", "n_samples", "max_gen_tokens"):
        if getattr(args, name) < 1:
            raise cli.UsageError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.limit is not None and args.limit < 1:
        raise cli.UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.num_fewshot < 0:
        raise cli.UsageError(f"--num_fewshot must be >= 0, got {args.num_fewshot}")
    try:
        args.pass_ks = tuple(sorted({int(k) for k in args.pass_k.split(",")}))
    except ValueError:
        raise cli.UsageError(f"--pass_k: comma-separated integers, got {args.pass_k!r}") from None
    if min(args.pass_ks) < 1 or max(args.pass_ks) > args.n_samples:
        raise cli.UsageError(f"--pass_k needs 1 <= k <= --n_samples ({args.n_samples}); got "
                             f"{args.pass_k}")
    if bool(args.grader_url) != bool(args.grader_model):
        raise cli.UsageError("--grader_url and --grader_model go together")
    return args


def load_tasks(spec: str):
    from phi4_jax.eval.tasks import load_task

    tasks, seen = [], {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        task = load_task(part)
        seen[task.name] = seen.get(task.name, 0) + 1
        if seen[task.name] > 1:  # two files with one stem: keep both
            task.name = f"{task.name}_{seen[task.name]}"
        tasks.append(task)
    if not tasks:
        raise cli.UsageError("--tasks is empty")
    return tasks


def make_lm(args):
    from phi4_jax.eval.lm import LocalLM, RemoteLM

    if args.base_url:
        import httpx

        model = args.served_model
        try:
            if model is None:
                reply = httpx.get(f"{args.base_url.rstrip('/')}/models", timeout=30)
                reply.raise_for_status()
                model = reply.json()["data"][0]["id"]
            return RemoteLM(args.base_url, model, batch_size=args.batch_size,
                            add_bos=args.add_bos, cache_path=args.cache)
        except httpx.HTTPError as e:
            raise cli.UsageError(f"--base_url={args.base_url}: {e}") from e
    from phi4_jax.serve.loading import load

    served = load(args.model, step=args.step, dtype=args.dtype)
    return LocalLM(served, batch_size=args.batch_size, add_bos=args.add_bos)


def make_grader(args):
    if not args.grader_url:
        return None
    from phi4_jax.eval.graders import LLMGrader
    from phi4_jax.synth import LLMClient, ModelConfig, ResponseCache

    cache = ResponseCache(args.cache) if args.cache else None
    return LLMGrader(LLMClient(ModelConfig(model=args.grader_model, base_url=args.grader_url,
                                           revision=None), cache=cache, seed=args.seed))


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    cli.quiet_library_noise()
    from phi4_jax.eval.evaluate import EvalConfig, evaluate, load_decontamination_report

    tasks = load_tasks(args.tasks)
    report = (load_decontamination_report(args.decontamination_report)
              if args.decontamination_report else None)
    lm = make_lm(args)
    config = EvalConfig(limit=args.limit, num_fewshot=args.num_fewshot, seed=args.seed,
                        n_samples=args.n_samples, pass_ks=args.pass_ks,
                        temperature=args.temperature, max_gen_tokens=args.max_gen_tokens,
                        progress=not args.no_progress)
    results = evaluate(lm, tasks, config, output=args.output, grader=make_grader(args),
                       tensorboard=args.tensorboard, decontamination=report)
    for name, task in results["tasks"].items():
        figures = ", ".join(f"{k} {v['value']:.4f}" + (f" +- {v['stderr']:.4f}"
                                                       if v["stderr"] is not None else "")
                            for k, v in task["metrics"].items())
        status = task.get("decontamination")
        if status is not None:
            figures += f"; decontamination: {status['status']}" + (
                f" ({status['records_matched']} training records matched "
                f"{len(status['items_matched'])} items)" if "benchmark" in status else "")
        print(f"{name} ({task['samples']} examples): {figures}")
    print(f"{PROG}: wrote {args.output}/results.json and samples/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
