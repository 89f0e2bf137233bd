"""Post-training data and DPO, offline end to end, on SmolLM2-135M (issue 13).

    python -m phi4_jax.posttrain.e2e --workdir=/tmp/posttrain_e2e

`python -m phi4_jax.serve` serves SmolLM2-135M-Instruct (GGUF, CPU) on 127.0.0.1 and a free
port; it is the policy, the judge and the teacher of: the judge job (`posttrain.judge`:
WORKDIR/judge/pairs.jsonl), the refusal job (`posttrain.refusal`: WORKDIR/refusal/
pairs.jsonl, sft.jsonl), and PTS (`posttrain.pts`, its in-process SmolLM2 sampler on a few
arithmetic questions: WORKDIR/pts/pairs.jsonl). Then the smoke chain trains on them:
`phi4_sft:smoke` (from scratch, on the demo SFT store) -> `phi4_dpo_pts:smoke` (PTS + refusal
pairs) -> `phi4_dpo_judge:smoke` (judge + refusal pairs), each with `python -m launch.local`.
Quality does not matter (a 135M judge does not write the rubric's JSON unprompted: its reply is
started inside the object with `--judge_prefill`; its scores, mostly tied, give few pairs or
none: counts in WORKDIR/judge/report.txt); the mechanics do. Every step is a
rerunnable command: the data jobs resume from their engine shards and a finished rerun asks
the server nothing. Sizes are tiny (--prompts, --samples, --max_tokens, --steps).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

from phi4_jax import cli
from phi4_jax.cli import run_step as step
from phi4_jax.serve.local import serving

PROG = "python -m phi4_jax.posttrain.e2e"
# A 135M judge does not write the rubric's JSON on its own (it answers in prose); started inside
# the object it fills in the scores (greedy: mostly the rubric example's, so ties are common;
# sampled at temperature 1 it wanders off the format).
JUDGE_PREFILL = '{"faults": [], "scores": {"accuracy": '
PROMPTS = ["What is 2+2?", "Name a color.", "Capital of France?", "Say hi.", "Is ice cold?",
           "Spell cat.", "Count to three.", "Name a fruit."]
TRIVIA = [("Capital of France?", "Paris"), ("Color of the sky?", "blue"),
          ("Largest planet?", "Jupiter"), ("Author of Hamlet?", "Shakespeare"),
          ("Freezing point of water in Celsius?", "0"), ("Opposite of hot?", "cold"),
          ("Number of legs of a spider?", "8"), ("First letter of the alphabet?", "A")]


def write_jsonl(path: str, rows: Sequence[dict]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__.split("\n\n")
    parser = cli.parser(PROG, "\n\n".join(doc[:1] + doc[2:]), example=doc[1].strip())
    parser.add_argument("--workdir", required=True, help="where everything is written")
    parser.add_argument("--prompts", type=int, default=3, help="judge prompts and trivia seeds")
    parser.add_argument("--samples", type=int, default=2, help="replies per prompt / seed")
    parser.add_argument("--max_tokens", type=int, default=12, help="per sampled reply")
    parser.add_argument("--steps", type=int, default=2, help="train steps of each smoke run")
    args = parser.parse_args(argv)
    from phi4_jax.convert.gguf import smollm2_path

    w, py = os.path.abspath(args.workdir), sys.executable
    env = {"JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    os.makedirs(w, exist_ok=True)
    start = time.perf_counter()
    with serving(smollm2_path(), log_path=os.path.join(w, "serve.log"),
                 served_model_name="smollm2", flags=["--default_max_tokens", "64"],
                 env=env) as url:
        n = args.prompts
        prompts = write_jsonl(f"{w}/inputs/prompts.jsonl", [
            {"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS[:n])])
        trivia = write_jsonl(f"{w}/inputs/trivia.jsonl", [
            {"id": f"t{i}", "question": q, "answer": a} for i, (q, a) in enumerate(TRIVIA[:n])])
        common = ["--base_url", url, "--max_workers", "4", "--quiet"]
        step("judge pairs", [py, "-m", "phi4_jax.posttrain.judge", "--input", prompts,
                             "--output", f"{w}/judge", "--model", "smollm2",
                             "--reply_models", "smollm2", "--num_samples", str(args.samples),
                             "--reply_max_tokens", str(args.max_tokens), "--judge_max_tokens",
                             "32", "--attempts", "2", "--by", "both",
                             "--judge_prefill", JUDGE_PREFILL,
                             *common], env,
             ok=(0, 1))  # 1: no pairs (every judged candidate of a prompt tied)
        step("refusal pairs", [py, "-m", "phi4_jax.posttrain.refusal", "--input", trivia,
                               "--output", f"{w}/refusal", "--model", "smollm2",
                               "--teacher_model", "smollm2", "--num_samples", str(args.samples),
                               "--max_tokens", str(args.max_tokens), *common], env)
        step("PTS pairs", [py, "-m", "phi4_jax.posttrain.pts", "--out", f"{w}/pts",
                           "--arithmetic", "40+32,4*15", "--n_samples", "16", "--p_gap", "0.2",
                           "--max_new_tokens", "6", "--stop_newline", "--solutions", "1",
                           "--batch_questions", "2", "--batch_rows", "32", "--seed", "0"], env)
    step("SFT data", [py, "-m", "phi4_jax.posttrain.demo", "sft", "--num_conversations", "64",
                      "--max_tokens", "128", "--output", f"{w}/sft_data/sft"], env)

    def train(exp: str, *flags: str) -> list[str]:  # --exp first: launch.local needs it so
        return [py, "-m", "launch.local", f"--exp={exp}", *flags,
                f"--exp.train.steps={args.steps}",
                f"--exp.optimizer.warmup_steps={min(args.steps, 1)}"]

    step("phi4_sft:smoke", train("phi4_sft:smoke", f"--workdir={w}/phi4_sft",
                                 f"--exp.data.data_root={w}/sft_data",
                                 "--exp.train.init_from="), env)
    step("phi4_dpo_pts:smoke", train(
        "phi4_dpo_pts:smoke", f"--workdir={w}/phi4_dpo_pts",
        f"--exp.dpo.pairs={w}/pts/pairs.jsonl,{w}/refusal/pairs.jsonl",
        f"--exp.train.init_from={w}/phi4_sft"), env)
    step("phi4_dpo_judge:smoke", train(
        "phi4_dpo_judge:smoke", f"--workdir={w}/phi4_dpo_judge",
        f"--exp.dpo.pairs={w}/judge/pairs.jsonl,{w}/refusal/pairs.jsonl",
        f"--exp.train.init_from={w}/phi4_dpo_pts"), env)
    print(f"[e2e] done in {time.perf_counter() - start:.0f}s: {w}")
    return 0


if __name__ == "__main__":
    cli.run(main, prog=PROG)
