"""Batched greedy decode throughput: phi4_jax KV-cache `generate` vs transformers `generate`.

Both sides load the same SmolLM2-135M-Instruct GGUF file in float32 (or both in bfloat16 with
--dtype bfloat16) on CPU, decode the same chat-formatted token ids greedily for exactly
--new-tokens tokens per row (transformers gets
min_new_tokens, we get no stop tokens), batched (transformers left-pads with an attention mask,
we take the ragged rows). tokens/s = batch * new_tokens / median wall time of a call; the first
call of each side (our compile, transformers' warm-up) is timed separately and excluded.

The bound column: every decode step reads all weights once, so a call cannot take less
than its prefill plus (new tokens - 1) x the time of only reading the weights (measured here
with the CPU kernel over the packed weights, one row, chained like the layers); the best ratio
against transformers that this leaves is printed beside the achieved one (docs/decode.md).

Each side runs in its own subprocess of this one run, one after the other: thread pools do not
interfere (torch.set_num_threads also changes the threads available to XLA in the same process,
which halves our throughput), and each torch thread setting gets a fresh process.

    JAX_PLATFORMS=cpu python bench/decode.py [--batch-sizes 8 1] [--torch-threads 2 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the ocean.",
    "Explain photosynthesis to a child.",
    "Give me three tips for learning to code.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet.",
    "What are the benefits of regular exercise?",
    "How do I make a cup of tea?",
]


def _prompt_ids() -> tuple[list[list[int]], int, int]:
    from phi4_jax.convert.gguf import GGUFTokenizer, smollm2_path

    tok = GGUFTokenizer(smollm2_path())
    ids = [tok.encode(tok.render_chat([{"role": "user", "content": p}])) for p in PROMPTS]
    pad = tok.pad_id if tok.pad_id is not None else tok.eos_id
    return ids, pad, tok.eos_id


def _measure(run, repeats: int) -> dict:
    start = time.perf_counter()
    tokens = run()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"first": first, "times": times, "tokens": tokens}


def worker_ours(batches: list[int], new: int, repeats: int, dtype: str) -> dict:
    import jax
    import numpy as np

    import phi4_jax
    from phi4_jax.convert.gguf import smollm2_path
    from phi4_jax.inference.decode import generate

    ids, _, _ = _prompt_ids()
    model = phi4_jax.load_gguf(smollm2_path(), dtype=dtype)
    out = {}
    for batch in batches:
        rows = [ids[i % len(ids)] for i in range(batch)]

        def run(rows=rows):
            result = generate(model, rows, max_new_tokens=new, stop_tokens=())
            return np.asarray(jax.block_until_ready(result.tokens)).tolist()

        out[batch] = _measure(run, repeats)

        def prefill(rows=rows):  # prompt pass + the first token only
            result = generate(model, rows, max_new_tokens=1, stop_tokens=())
            return np.asarray(jax.block_until_ready(result.tokens)).tolist()

        out[batch]["prefill"] = min(_measure(prefill, repeats)["times"])
    out[0] = _packed_info(model, repeats)
    return out


def _packed_info(model, repeats: int) -> dict:
    """How this worker decodes: whether the CPU kernel is used, the largest packed batch, the
    bytes of packed weights, and `floor`: seconds to read every weight once (one row, the CPU
    kernel), the least a bandwidth-bound one-token step can take here (None without it)."""
    import jax
    import jax.numpy as jnp

    from phi4_jax.inference import kernels, packed

    weights = packed.decode_weights(model)
    info = {"kernel": packed.uses_kernel(model.config),
            "max_packed": packed.max_packed_batch(model.config),
            "bytes": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(weights)),
            "floor": None}
    if not info["kernel"]:
        return info
    mats = [w for layer in weights.layers for w in (layer.qkv, layer.o, layer.gate_up,
                                                     layer.down)] + [weights.vocab]

    @jax.jit
    def read_all(mats):
        # Chained like the layers (each product's input depends on the previous one).
        y = jnp.zeros((1, mats[0].shape[1]), jnp.float32)
        total = jnp.float32(0)
        for w in mats:
            x = jnp.broadcast_to(y[:, :1], (1, w.shape[1]))
            out = kernels.small_matmul(x, w, w.shape[0] * kernels.PANEL)
            total, y = total + out[0, 0], out
        return total

    jax.block_until_ready(read_all(mats))
    times = []
    for _ in range(max(repeats, 5)):
        start = time.perf_counter()
        jax.block_until_ready(read_all(mats))
        times.append(time.perf_counter() - start)
    info["floor"] = min(times)
    return info


def worker_hf(batches: list[int], new: int, repeats: int, threads: int, dtype: str) -> dict:
    import torch
    import transformers

    from phi4_jax.convert.gguf import smollm2_path

    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    path = smollm2_path()
    ids, pad, _ = _prompt_ids()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path),
        dtype=getattr(torch, dtype)).eval()
    out = {}
    for batch in batches:
        rows = [ids[i % len(ids)] for i in range(batch)]
        width = max(len(r) for r in rows)
        left = torch.full((batch, width), pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for b, r in enumerate(rows):
            left[b, width - len(r):] = torch.tensor(r)
            mask[b, width - len(r):] = 1

        def run(left=left, mask=mask, width=width):
            with torch.no_grad():
                seq = model.generate(left, attention_mask=mask, max_new_tokens=new,
                                     min_new_tokens=new, do_sample=False, pad_token_id=pad)
            return seq[:, width:].tolist()

        out[batch] = _measure(run, repeats)
    return out


def _run_worker(side: str, args: argparse.Namespace, threads: int = 0) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--threads", str(threads),
           "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats),
           "--dtype", args.dtype,
           "--batch-sizes", *map(str, args.batch_sizes)]
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result = {int(k): v for k, v in result.items()}
    return {"load": load, **result, **result.pop(0, {})}


def _same_until_eos(ours: list[int], theirs: list[int], eos: int) -> bool:
    """transformers' min_new_tokens masks eos, so rows may legitimately part at our first eos."""
    n = ours.index(eos) if eos in ours else len(ours)
    return ours[:n] == theirs[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 1])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and compute dtype of both sides")
    parser.add_argument("--torch-threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="torch.set_num_threads settings to measure (default: CPU count)")
    parser.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    if args.worker == "ours":
        print(json.dumps(worker_ours(args.batch_sizes, args.new_tokens, args.repeats,
                                     args.dtype)))
        return
    if args.worker == "hf":
        print(json.dumps(worker_hf(args.batch_sizes, args.new_tokens, args.repeats,
                                   args.threads, args.dtype)))
        return

    import jax
    import torch
    import transformers

    _, _, eos = _prompt_ids()
    ours = _run_worker("ours", args)
    theirs = {t: _run_worker("hf", args, t) for t in args.torch_threads}
    kernel, limit = ours["kernel"], ours["max_packed"]  # as the worker decoded
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"SmolLM2-135M-Instruct, {args.dtype}, CPU ({os.cpu_count()} cores, {threads} usable "
          f"threads), greedy, "
          f"{args.new_tokens} new tokens per row, median of {args.repeats} calls; jax "
          f"{jax.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
    floor = ours["floor"]
    header = ("batch", "implementation", "torch threads", "load avg", "first call s",
              "prefill s", "median s", "tokens/s", "ours / theirs", "bound on ours / theirs",
              "rows identical to ours")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for batch in args.batch_sizes:
        mine = ours[batch]
        ours_tps = batch * args.new_tokens / statistics.median(mine["times"])
        path = ("scanned layers" if batch > limit
                else "packed layers, CPU kernel" if kernel else "packed layers")
        # No call can beat its prefill plus one weight read per further token.
        best = None if floor is None else mine["prefill"] + (args.new_tokens - 1) * floor
        print(f"| {batch} | phi4_jax generate ({path}) | - | {ours['load']:.1f} | "
              f"{mine['first']:.2f} | {mine['prefill']:.3f} | "
              f"{statistics.median(mine['times']):.3f} | {ours_tps:.1f} | | "
              f"{'' if best is None else f'(fastest possible: {best:.3f} s)'} | |")
        for threads, result in theirs.items():
            r = result[batch]
            med = statistics.median(r["times"])
            tps = batch * args.new_tokens / med
            same = sum(_same_until_eos(a, b, eos) for a, b in zip(mine["tokens"], r["tokens"]))
            bound = "" if best is None else f"{med / best:.2f}x"
            print(f"| {batch} | transformers generate | {threads} | {result['load']:.1f} | "
                  f"{r['first']:.2f} | | {med:.3f} | {tps:.1f} | {ours_tps / tps:.2f}x | "
                  f"{bound} | {same}/{batch} |")
    print("first call: our compile + run, or transformers' warm-up run (excluded from "
          "tokens/s). prefill: our call with max_new_tokens=1 (best of the repeats). rows "
          "identical: greedy tokens equal up to our first eos (transformers' min_new_tokens "
          "masks eos after that). load avg: 1-minute load when the side started.")
    if floor is not None:
        print(f"bound: one decode step reads every {args.dtype} weight once; doing only that (the "
              f"kernel over all {ours['bytes'] / 1e6:.0f} MB of packed weights, one row) takes "
              f"{floor * 1e3:.1f} ms here ({ours['bytes'] / floor / 1e9:.1f} GB/s), so no "
              f"call can take less than prefill + {args.new_tokens - 1} x {floor * 1e3:.1f} ms; "
              f"'bound on ours / theirs' is the best ratio that leaves.")

if __name__ == "__main__":
    main()
