"""Multiple-choice log-likelihood scoring of SmolLM2-135M: this harness vs lm-eval's HF backend.

A local task of N three-choice questions (arithmetic and comparisons generated with a fixed
seed, JSONL, "Question: {question}\\nAnswer:"), the same SmolLM2-135M weights as a float32
Hugging Face directory (written from the GGUF), scored in one run by
- lm-eval-harness's `hf` model (transformers + torch, float32, CPU, --batch_size), and
- `phi4_jax.eval` in process (float32, --batch_size; questions and their choices packed as
  token tries, each distinct prefix run once, so a context once for all its choices; one
  compiled program per row-length class), once cold (compiles included, their count
  printed) and once warm,
each side in its own subprocess, one after the other. examples/s = N / wall time of the
evaluation call (model loading excluded on both sides). The per-choice log-likelihoods must be
identical up to float32 summation order: the largest difference is printed and checked.

    JAX_PLATFORMS=cpu python bench/eval.py [--examples 300] [--batch_size 32]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

from host import cpu_model  # bench/host.py: this folder is sys.path[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 2e-4  # nats, as tests/eval/test_lm_eval_parity.py



def questions(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        if i % 2:
            q, right = f"What is {a} plus {b}?", str(a + b)
            wrong = [str(a + b + d) for d in rng.sample([-10, -2, -1, 1, 2, 10], 2)]
        else:
            q = f"Which number is larger, {a} or {b}?"
            right, wrong = str(max(a, b)), [str(min(a, b)), str(a * b)]
        choices = [right, *wrong]
        rng.shuffle(choices)
        out.append({"question": q, "choices": choices, "answer": choices.index(right)})
    return out


def run_peer(hf_dir: str, include: str, batch_size: int, out: str) -> None:
    import time

    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(os.cpu_count() or 1)
    lm = HFLM(pretrained=hf_dir, dtype="float32", device="cpu", batch_size=batch_size)
    start = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=["bench_mc"], log_samples=True, cache_requests=False,
                          task_manager=TaskManager(include_path=include))
    wall = time.perf_counter() - start
    samples = sorted(res["samples"]["bench_mc"], key=lambda s: s["doc_id"])
    with open(out, "w") as f:
        json.dump({"wall": wall, "acc": res["results"]["bench_mc"]["acc,none"],
                   "loglik": [[float(r[0][0]) for r in s["resps"]] for s in samples]}, f)


def run_ours(hf_dir: str, data: str, batch_size: int, out: str) -> None:
    import time

    from phi4_jax.eval.evaluate import EvalConfig, evaluate
    from phi4_jax.eval.lm import LocalLM
    from phi4_jax.eval.tasks import load_task
    from phi4_jax.serve.loading import load

    lm = LocalLM(load(hf_dir, dtype="float32"), batch_size=batch_size)
    task = load_task(f"mc:{data}")
    walls, compiles, results = [], [], None
    for _ in range(2):  # cold (compiles), then warm
        before = dict(lm.work)
        start = time.perf_counter()
        results = evaluate(lm, [task], EvalConfig(progress=False), output=os.path.dirname(out))
        walls.append(time.perf_counter() - start)
        compiles.append(lm.compiles - sum(compiles))
    work = {k: lm.work[k] - before[k] for k in before}  # the warm run's
    with open(os.path.join(os.path.dirname(out), "samples", f"{task.name}.jsonl")) as f:
        loglik = [json.loads(line)["loglik"] for line in f]
    with open(out, "w") as f:
        json.dump({"cold": walls[0], "warm": walls[1], "loglik": loglik,
                   "compiles": compiles, "shapes": len(lm.shapes),
                   "acc": results["tasks"][task.name]["metrics"]["acc"]["value"],
                   "work": work, **matmul_bound(lm, task, work)}, f)


def matmul_bound(lm, task, work: dict) -> dict:
    """The work both sides do and how fast this host multiplies matrices.

    Weight matmuls only (2 flops per parameter per token; attention over <= 25 tokens is
    noise): ours runs each distinct prefix of a packed row once through the blocks and
    projects each position that predicts a choice token onto the vocabulary (`work`, counted
    by LocalLM, padding excluded); lm-eval's HF backend runs context + choice through both for
    every choice (transformers projects every position). `gflops`: the best rate of XLA:CPU
    dots of the blocks' shapes at 512 rows (a pass's size), in this process: ours cannot take
    less than its flops / that rate."""
    import time

    import jax
    import jax.numpy as jnp

    from phi4_jax.eval.requests import encode_pair

    cfg = lm.model.config
    d, f, h = cfg.embed_dim, cfg.mlp_dim, cfg.head_dim
    block = d * (cfg.num_heads + 2 * cfg.num_kv_heads) * h + cfg.num_heads * h * d + 3 * d * f
    blocks, vocab = cfg.num_layers * block, d * cfg.vocab_size
    rows = 0
    for doc in task.docs:  # zero-shot: the context is the doc's own (runners.run_mc)
        for choice in doc["choices"]:
            c, k = encode_pair(lm, doc["context"], f" {choice}")
            rows += len(c) + len(k)
    ours = 2 * (work["block_tokens"] * blocks + work["vocab_rows"] * vocab)
    peer = 2 * rows * (blocks + vocab)
    shapes = [(d, (cfg.num_heads + 2 * cfg.num_kv_heads) * h), (cfg.num_heads * h, d),
              (d, 2 * f), (f, d)]
    mats = [jnp.full(s, 0.01, jnp.float32) for s in shapes]

    @jax.jit
    def chain(x, mats):
        total = jnp.float32(0)
        for w in mats:
            total += (x[:, :w.shape[0]] @ w).sum()
        return total

    x = jnp.ones((512, max(d, f)), jnp.float32)
    chain(x, mats).block_until_ready()
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        chain(x, mats).block_until_ready()
        best = min(best, time.perf_counter() - start)
    rate = 2 * 512 * sum(a * b for a, b in shapes) / best
    return {"flops": ours, "peer_flops": peer, "gflops": rate / 1e9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--side", choices=("ours", "peer"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--paths", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side == "peer":
        return run_peer(*args.paths[:2], args.batch_size, args.paths[2])
    if args.side == "ours":
        return run_ours(*args.paths[:2], args.batch_size, args.paths[2])

    import numpy as np

    from phi4_jax.convert.gguf import smollm2_path
    from phi4_jax.serve.loading import load

    sys.path.insert(0, ROOT)
    from tests.serve.conftest import write_hf_dir  # one writer for tests and bench

    tmp = tempfile.mkdtemp(prefix="bench_eval_")
    hf_dir = write_hf_dir(load(smollm2_path()), os.path.join(tmp, "hf"))
    data = os.path.join(tmp, "bench_mc.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(q) + "\n" for q in questions(args.examples))
    with open(os.path.join(tmp, "bench_mc.yaml"), "w") as f:
        f.write("task: bench_mc\ndataset_path: json\n"
                f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
                "test_split: test\noutput_type: multiple_choice\n"
                "doc_to_text: \"Question: {{question}}\\nAnswer:\"\n"
                "doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{answer}}\"\n"
                "metric_list:\n  - metric: acc\n")
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONPATH=ROOT,
               JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    load_before = os.getloadavg()
    figures = {}
    for side, paths in (("peer", [hf_dir, tmp, os.path.join(tmp, "peer.json")]),
                        ("ours", [hf_dir, data, os.path.join(tmp, "ours", "ours.json")])):
        os.makedirs(os.path.dirname(paths[2]), exist_ok=True)
        subprocess.run([sys.executable, __file__, f"--side={side}", "--paths", *paths,
                        f"--batch_size={args.batch_size}"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        with open(paths[2]) as f:
            figures[side] = json.load(f)
    n = args.examples
    peer, ours = figures["peer"], figures["ours"]
    diff = float(np.abs(np.array(peer["loglik"]) - np.array(ours["loglik"])).max())
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{n} three-choice examples, SmolLM2-135M float32, batch size {args.batch_size}")
    print(f"lm-eval hf:          {peer['wall']:7.1f} s  {n / peer['wall']:7.2f} examples/s  "
          f"acc {peer['acc']:.3f}")
    print(f"phi4_jax.eval cold:  {ours['cold']:7.1f} s  {n / ours['cold']:7.2f} examples/s  "
          f"({ours['compiles'][0]} XLA compiles included, {ours['shapes']} program shapes)")
    print(f"phi4_jax.eval warm:  {ours['warm']:7.1f} s  {n / ours['warm']:7.2f} examples/s  "
          f"acc {ours['acc']:.3f}; {ours['compiles'][1]} compiles")
    print(f"ratio (lm-eval s / ours s): {peer['wall'] / ours['warm']:.2f}x warm, "
          f"{peer['wall'] / ours['cold']:.2f}x cold")
    least = ours["flops"] / (ours["gflops"] * 1e9)
    work = ours["work"]
    print(f"bound: ours does {ours['flops'] / 1e12:.2f} TFLOP of weight matmuls "
          f"({work['block_tokens']} token passes, {work['vocab_rows']} vocabulary projections), "
          f"lm-eval {ours['peer_flops'] / 1e12:.2f}; XLA:CPU dots of these shapes run at "
          f"{ours['gflops']:.0f} GFLOP/s here, so ours takes at least {least:.1f} s (it took "
          f"{ours['warm']:.1f}: {ours['flops'] / ours['warm'] / 1e9:.0f} GFLOP/s) and the best "
          f"ratio at this matmul rate is {peer['wall'] / least:.2f}x (lm-eval ran at "
          f"{ours['peer_flops'] / peer['wall'] / 1e9:.0f} GFLOP/s)")
    print(f"max |ours - lm-eval| per-choice log-likelihood: {diff:.2e} nats "
          f"({'ok' if diff <= TOLERANCE else 'ABOVE'} tolerance {TOLERANCE})")
    if diff > TOLERANCE:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
